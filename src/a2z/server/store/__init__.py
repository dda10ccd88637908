"""Database engine, declarative base and the one tenant-scoped session factory."""
