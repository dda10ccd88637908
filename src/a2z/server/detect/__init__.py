"""The detect role: backend detections over every tenant's stream, alerts into the store."""
