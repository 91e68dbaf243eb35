"""``python -m bench`` runs the throughput benchmark (same as ``python -m bench.throughput``)."""

from .throughput import main

raise SystemExit(main())
