"""The multi-tenant backend: API, ingest, store and dashboard."""
