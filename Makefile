# The README's two commands: `make example` and `make test`.
# Both set up what they need first (.ci/setup is idempotent).

.PHONY: setup test example bench

setup:
	@.ci/setup

test: setup
	.venv/bin/python -m pytest -q

example: setup
	examples/run-hello

bench: setup
	.venv/bin/python benchmarks/run_all.py
