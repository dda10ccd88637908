"""Agent commands: issued through the API, delivered on the channel, answered once, audited."""
