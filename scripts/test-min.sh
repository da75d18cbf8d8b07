#!/usr/bin/env bash
# `make test-min`: the tests against the lowest version of every runtime dependency that
# pyproject.toml allows (locks/minimum.txt), in a venv of its own (.venv-min). The test tools
# themselves are the newest that fit. Extra arguments go to pytest (default: the files of
# LIBRARY_FILES in tests/tiers.py, their fast and redis tier tests: those that exercise the
# client libraries' API in this process: the Redis client on one server, TLS, the shipped ACLs
# and Cluster, the CLI, settings, metrics, logs; the fleet tier runs the same calls again in
# worker processes, and static checks call none). `scripts/test-min.sh --install-only` makes
# the venv and checks the floors, and runs no test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh >/dev/null  # redis-server on PATH
PY=${PYTHON:-python3}
venv=.venv-min
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
stamp=$venv/.installed-$(cat pyproject.toml locks/minimum.txt | cksum | cut -d' ' -f1)
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install -q -c locks/minimum.txt -e . \
    pytest pytest-timeout hypothesis pyyaml jsonschema kubernetes-validate psutil
  touch "$stamp"
fi
# every runtime dependency really is at its floor
"$venv/bin/python" - <<'PYEOF'
import sys
from importlib.metadata import version
from pathlib import Path

wrong = []
for line in Path("locks/minimum.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
        name, _, want = line.partition("==")
        if version(name) != want:
            wrong.append(f"{name} {version(name)} (want {want})")
if wrong:
    sys.exit("not at the floor: " + ", ".join(wrong))
print("runtime dependencies at their floors:", Path("locks/minimum.txt").read_text().count("=="))
PYEOF
if [ "${1:-}" = --install-only ]; then
  exit 0  # .ci/run makes the venv while make test runs
fi
if [ $# -eq 0 ]; then
  files=$("$venv/bin/python" -c 'from tests.tiers import LIBRARY_FILES; print(*LIBRARY_FILES)')
  set -- -m "fast or redis" $(printf 'tests/%s ' $files)
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
