"""Placeholder namers; the real ones live in one module per owner family."""
