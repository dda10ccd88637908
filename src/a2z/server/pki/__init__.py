"""Agent identity: per-tenant certificate authorities, agent certificates, the gateway's own."""
