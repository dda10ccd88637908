"""The demo: embedded server, demo tenant, and an agent replaying a bundled attack capture."""
