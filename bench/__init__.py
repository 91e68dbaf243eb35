"""Benchmarks of fastload: ``python -m bench.throughput`` and ``bench/micro`` (pytest-benchmark)."""
