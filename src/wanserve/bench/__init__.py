"""Benchmarks shipped with the package (`wanserve bench ...`); speed is measured here, never in tests."""
