"""Authentication: passwords, access tokens, API keys, and the principal they resolve to."""
