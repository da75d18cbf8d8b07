# The README's commands. Each target sets itself up (venv, install, redis-server check).
.PHONY: demo up test test-min lock lint chaos bench screenshot clean

demo:
	@scripts/bootstrap.sh
	@.venv/bin/python -m eventfleet.local.demo

up:
	@scripts/bootstrap.sh
	@.venv/bin/eventfleet up

test:
	@scripts/bootstrap.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q

# The lowest versions pyproject.toml allows (locks/minimum.txt) in .venv-min, then the tests.
test-min:
	@scripts/test-min.sh

# Re-pin locks/runtime.txt and locks/dev.txt (newest versions pyproject.toml allows, hashed).
lock:
	@scripts/lock.sh

lint:
	@scripts/bootstrap.sh
	.venv/bin/ruff check .
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
