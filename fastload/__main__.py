"""``python -m fastload COMMAND ...``: the same as the ``fastload`` console script."""

from __future__ import annotations

import sys

from fastload._cli import main

if __name__ == "__main__":
    sys.exit(main())
