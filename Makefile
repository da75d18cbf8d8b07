# The README's commands. Each target sets itself up (venv, install, redis-server check).
.PHONY: demo up test test-fast test-redis test-fleet test-min lock lint chaos bench screenshot clean

demo:
	@scripts/bootstrap.sh
	@.venv/bin/python -m eventfleet.local.demo

up:
	@scripts/bootstrap.sh
	@.venv/bin/eventfleet up

# Every tier but chaos (tests/tiers.py; make chaos runs that): lint beside the fast tier (two
# single-core jobs, their output each in one piece), then the redis and fleet tiers together in
# three parts side by side (both mostly wait on servers and processes). docs/DEPLOYMENT.md,
# "Checks in CI", has the times.
test:
	@scripts/bootstrap.sh test
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint test-fast
	@scripts/test-shards.sh 3 -m "redis or fleet"

# Pure tests and tests against one redis-server, no worker process: under a minute.
test-fast:
	@scripts/bootstrap.sh test
	.venv/bin/python -m pytest -q -m fast

# Redis servers of their own (restarts, TLS, the shipped ACLs, Cluster), commands as processes.
test-redis:
	@scripts/bootstrap.sh test
	.venv/bin/python -m pytest -q -m redis

# Worker processes: fleets, failover, up, the quick bench; in two parts side by side.
# (make test runs this tier and the redis tier together, in three parts.)
test-fleet:
	@scripts/bootstrap.sh test
	@scripts/test-shards.sh 2 -m fleet

# The lowest versions pyproject.toml allows (locks/minimum.txt) in .venv-min, then the tiers
# that exercise the client libraries (fast and redis).
test-min:
	@scripts/test-min.sh

# Re-pin locks/runtime.txt and locks/dev.txt (newest versions pyproject.toml allows, hashed).
lock:
	@scripts/lock.sh

lint:
	@scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

chaos:
	@scripts/bootstrap.sh
	.venv/bin/python -m pytest -q -m chaos -p no:cacheprovider

bench:
	@scripts/bootstrap.sh
	.venv/bin/eventfleet bench

screenshot:
	docs/img/capture.sh

clean:
	rm -rf .venv .venv-min .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The shipped docker-compose.yml run for real on a Docker engine (scripts/compose-check.py,
# docs/DEPLOYMENT.md): one build, 4 workers, the load, verify, a worker killed, scaled to 2 and
# back to 4 with the documented command, verify, ledger totals unchanged, down -v. A machine's
# own extra compose files come from EVENTFLEET_COMPOSE_FILES (':'-separated).
.PHONY: compose-check python-check
compose-check:
	@scripts/compose-check.py

# The locks install and `make demo` runs on another Python (scripts/python-check.sh), by
# default Debian 12's own /usr/bin/python3 (3.11.2); PYTHON=... names another.
python-check:
	@scripts/python-check.sh
