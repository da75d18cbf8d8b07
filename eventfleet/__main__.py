"""``python -m eventfleet``."""

from __future__ import annotations

import sys

from eventfleet.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
