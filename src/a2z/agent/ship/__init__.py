"""Shipping: batching records into wire frames and delivering them over the agent channel."""
