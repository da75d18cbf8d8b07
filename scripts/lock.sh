#!/usr/bin/env bash
# `make lock`: re-pin locks/runtime.txt (what the image installs, the api extra included) and locks/dev.txt (what
# `make test` and CI install) to the newest versions pyproject.toml allows, each file with the
# sha256 hash of every release file, for Python 3.11. Uses pip-tools in a venv of its own.
#
#   scripts/lock.sh           re-pin everything, then step 2
#   scripts/lock.sh markers   step 2 alone: the requirements of older 3.11 releases, added to
#                             the current locks without re-pinning anything else
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.venv-lock
[ -x "$tools/bin/pip-compile" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q pip-tools; }
opts=(-q --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras --allow-unsafe
      --no-header)

# 1. Everything, for the interpreter pip-compile runs on.
if [ "${1:-}" != markers ]; then
  (
    cd locks
    ../"$tools"/bin/pip-compile "${opts[@]}" --upgrade --extra api --output-file runtime.txt \
      ../pyproject.toml
    ../"$tools"/bin/pip-compile "${opts[@]}" --upgrade --extra dev --output-file dev.txt \
      ../pyproject.toml
  )
fi

# 2. pip-compile resolves for the interpreter it runs on, so a dependency whose environment
# marker holds only on older 3.11 releases is left out, and the lock would not install there
# although requires-python allows it. Debian 12's own python3 is 3.11.2, and redis needs
# async-timeout below 3.11.3. Each such requirement is locked on its own (hashes from pip-tools,
# as above) and put into both files with its marker, which pip evaluates at install time.
# tests/test_locks.py checks that every marker'd requirement of a locked package is here.
older=(
  'async-timeout>=4.0.3; python_full_version < "3.11.3"'  # redis (its own marker)
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for req in "${older[@]}"; do
  echo "${req%%;*}" > "$tmp/older.in"
  "$tools/bin/pip-compile" "${opts[@]}" --upgrade --output-file "$tmp/older.txt" "$tmp/older.in"
  "$tools/bin/python" - "$tmp/older.txt" "${req#*; }" locks/runtime.txt locks/dev.txt <<'PYEOF'
"""Put one locked requirement (name==version and its hashes) into lock files, with a marker,
replacing any earlier entry of that name, in pip-compile's order (by name)."""
import re
import sys
from pathlib import Path

compiled, marker, *targets = sys.argv[1:]
lines = Path(compiled).read_text(encoding="utf-8").splitlines()
name, version = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", lines[0]).groups()
hashes = [line.strip().rstrip(" \\") for line in lines if line.strip().startswith("--hash=")]
entry = [f"{name}=={version} ; {marker} \\"]
entry += [f"    {h} \\" for h in hashes[:-1]] + [f"    {hashes[-1]}"]
entry += [f"    # only where {marker}: added by scripts/lock.sh"]


def key(text: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"^[A-Za-z0-9_.\-]+", text).group(0)).lower()


for target in targets:
    entries: list[list[str]] = []
    for line in Path(target).read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace():
            entries.append([line])
        elif entries:
            entries[-1].append(line)
    entries = [e for e in entries if key(e[0]) != key(name)] + [entry]
    entries.sort(key=lambda e: key(e[0]))
    Path(target).write_text("".join(line + "\n" for e in entries for line in e), encoding="utf-8")
PYEOF
done
