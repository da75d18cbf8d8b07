"""``python -m worker``: the same as ``eventfleet worker``."""

from __future__ import annotations

import sys

from eventfleet.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
