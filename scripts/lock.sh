#!/usr/bin/env bash
# `make lock`: re-pin locks/runtime.txt (what the image installs) and locks/dev.txt (what
# `make test` and CI install) to the newest versions pyproject.toml allows, each file with the
# sha256 hash of every release file, for Python 3.11. Uses pip-tools in a venv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.venv-lock
[ -x "$tools/bin/pip-compile" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q pip-tools; }
opts=(-q --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras --allow-unsafe
      --no-header --upgrade)
cd locks
../"$tools"/bin/pip-compile "${opts[@]}" --output-file runtime.txt ../pyproject.toml
../"$tools"/bin/pip-compile "${opts[@]}" --extra dev --output-file dev.txt ../pyproject.toml
