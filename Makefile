# The README's commands. Each target sets itself up (venv, install, redis-server check).
.PHONY: demo test lint chaos bench clean

demo:
	@scripts/bootstrap.sh
	@.venv/bin/python -m eventfleet.demo

test:
	@scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q

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

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
