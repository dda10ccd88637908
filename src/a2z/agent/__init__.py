"""The network agent: capture, decode, flows, protocols, detection and shipping."""
