"""Per-tenant limits on ingest: events per second (token bucket) and stored bytes."""
