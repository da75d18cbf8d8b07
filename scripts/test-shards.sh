#!/usr/bin/env bash
# `make test-fleet`: the tests that the given pytest arguments select, in N processes side by
# side (`--shard i/N`: disjoint parts by test file, balanced by their rough cost, see
# tests/tiers.py). The fleet tier mostly waits (leases, failovers, workers starting), so two
# parts on two cores take little more than half the time of one. Each part's output is shown
# once all have finished; fails if any part fails.
#   scripts/test-shards.sh 2 -m fleet
set -uo pipefail
cd "$(dirname "$0")/.."
n=$1
shift
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' INT TERM
for i in $(seq 1 "$n"); do
  # no cache plugin: two processes would overwrite each other's record of what failed
  .venv/bin/python -m pytest -q -p no:cacheprovider --durations=12 "$@" --shard "$i/$n" >"$dir/$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in $(seq 1 "$n"); do
  wait "${pids[$((i - 1))]}" || status=1
  echo "--- part $i of $n: pytest -q $* --shard $i/$n"
  cat "$dir/$i.log"
done
rm -rf "$dir"
exit $status
