"""Benchmarks: scripts that print figures beside a peer run on the same data (docs/benchmarks.md)."""
