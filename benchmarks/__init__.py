"""Benchmarks: they print figures and never fail on a slow machine (kept apart from the tests)."""
