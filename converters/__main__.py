"""``python -m converters NAME SRC DST [options]``; see :mod:`converters._cli`."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
