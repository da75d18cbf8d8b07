#!/usr/bin/env bash
# `make python-check [PYTHON=...]`: the locks install and `make demo` runs on a given Python,
# by default Debian 12's own /usr/bin/python3 (3.11.2: below 3.11.3, where redis still needs
# async-timeout, which a lock made on a newer 3.11 leaves out unless scripts/lock.sh adds it).
# CI runs it (.ci/run). In a throwaway copy of the working tree, so the checkout's .venv is
# not touched:
#   1. a venv of that Python, locks/runtime.txt installed with --require-hashes (what the image
#      and a user install), then the project's wheel with --no-deps, `pip check`, the CLI;
#   2. `make demo PYTHON=...`: scripts/bootstrap.sh makes .venv with that Python from
#      locks/dev.txt (--require-hashes), and the demo runs its throwaway redis-server.
# Needs that Python with its venv module (Debian: apt-get install python3-venv) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "python-check: no $PY here; name another interpreter with PYTHON=/path/to/python3" >&2
  exit 1
fi
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "python-check: $PY has no venv module (Debian: apt-get install python3-venv)" >&2
  exit 1
fi
version=$("$PY" -c 'import platform; print(platform.python_version())')
now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(now)"; }
t0=$(now)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eventfleet-python-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The working tree as git sees it (tracked and new files, nothing ignored: no .venv, no caches).
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$tmp"
echo "python-check: $PY (Python $version), in $tmp"
if "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11, 3))'; then
  echo "python-check: note: Python $version is 3.11.3 or later, so the requirements only older" \
    "3.11 releases have (async-timeout) are not exercised here; Debian 12's python3 is 3.11.2"
fi

t=$(now)
"$PY" -m venv "$tmp/.venv-runtime"
"$tmp/.venv-runtime/bin/python" -m pip install -q --require-hashes -r "$tmp/locks/runtime.txt"
"$tmp/.venv-runtime/bin/python" -m pip install -q --no-deps "$tmp"
"$tmp/.venv-runtime/bin/python" -m pip check
"$tmp/.venv-runtime/bin/eventfleet" --help >/dev/null
echo "python-check: locks/runtime.txt and the project installed on Python $version: $(took "$t")"

t=$(now)
make -C "$tmp" --no-print-directory demo PYTHON="$PY"
"$tmp/.venv/bin/python" -c 'import platform, sys; sys.exit(platform.python_version() != sys.argv[1])' \
  "$version" || { echo "python-check: make demo did not use Python $version" >&2; exit 1; }
echo "python-check: make demo on Python $version (locks/dev.txt, then the demo): $(took "$t")"
echo "python-check: OK in $(took "$t0")"
