#!/usr/bin/env bash
# Set-up shared by `make demo` and `make test`: a venv with the project installed (dev extra)
# and a redis-server on PATH (installed with apt-get when missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: eventfleet needs Python 3.11 or newer ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi
# redis-server for the tests and the demo; Debian's prometheus package for the tests: promtool
# (the config, the dashboard's queries, `promtool test rules` on the alerts) and the server
# itself (tests/test_prometheus_live.py scrapes live workers and the exporter with it).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ "${1:-}" = "test" ] && ! { command -v promtool && command -v prometheus; } >/dev/null 2>&1; then
  missing="$missing prometheus"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing with apt-get:$missing" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "error: missing:$missing. Install with" >&2
    echo "  sudo apt-get install -y$missing      # Debian/Ubuntu" >&2
    echo "  (macOS: brew install redis prometheus)" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The locked versions (locks/dev.txt: every runtime and dev dependency, pinned with sha256
# hashes that pip checks), then the project itself without resolving anything again.
stamp=.venv/.installed-$(cat pyproject.toml locks/dev.txt | cksum | cut -d' ' -f1)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --require-hashes -r locks/dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  touch "$stamp"
fi
