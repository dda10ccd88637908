"""A2Z SOC: a network agent and a multi-tenant backend that turns its telemetry into alerts."""

__version__ = "0.1.0"
