"""Benchmarks, run from the repository root as `python -m benchmarks.<name>` (they share
benchmarks/common.py); a package so the tests can import them."""
