"""Tenant detection rules: custom Sigma rules, overrides of shipped rules, their versions."""
