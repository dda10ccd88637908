"""The dashboard: a static page that talks to the API."""
