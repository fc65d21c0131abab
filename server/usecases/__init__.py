"""Use cases: what the service does for a caller, over injected storage ports."""
