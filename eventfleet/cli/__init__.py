"""The ``eventfleet`` command line: one click group (``main.py``) and a module per command."""

from __future__ import annotations

from eventfleet.cli.main import cli, main

__all__ = ["cli", "main"]
