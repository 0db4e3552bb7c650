"""Canary analysis: query rendering and judging (pure) and metric providers (I/O)."""
