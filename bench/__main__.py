"""``python -m bench`` runs the throughput benchmark (same as ``python -m bench.throughput``)."""

from .throughput import main

if __name__ == "__main__":
    raise SystemExit(main())
