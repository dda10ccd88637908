"""Ingest: consume record batches from the bus and write them to the event store."""
