"""Events: the records agents send, stored per tenant and searchable."""
