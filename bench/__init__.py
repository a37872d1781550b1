"""Benchmarks (never run by the tests): python -m bench.<name>."""
