#!/usr/bin/env bash
# `make test-min`: the tests against the lowest version of every runtime dependency that
# pyproject.toml allows (locks/minimum.txt), in a venv of its own (.venv-min). The test tools
# themselves are the newest that fit. Extra arguments go to pytest (default: the fast and redis
# tiers of tests/tiers.py, which exercise the client libraries in this process: the Redis
# client on one server, TLS, the shipped ACLs and Cluster, the CLI, settings, metrics, logs, a
# Worker's loop; the fleet tier runs the same libraries again in worker processes).
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
if [ $# -eq 0 ]; then
  set -- -m "fast or redis"
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
