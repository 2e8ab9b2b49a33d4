"""Benchmarks and the main report (`python -m benchmarks`)."""
