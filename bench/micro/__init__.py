"""pytest-benchmark micro-benchmarks of fastload's hot paths.

Run with ``python -m pytest bench/micro --benchmark-enable`` (they are not part
of the default test run, which collects ``tests/`` only and disables
benchmarks).
"""
