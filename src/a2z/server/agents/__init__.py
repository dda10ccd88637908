"""Agents: the registry of enrolled sensors and the channel they stream records over."""
