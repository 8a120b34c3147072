# The README's two commands: `make example` and `make test`.
# Both set up what they need first (.ci/setup is idempotent).

.PHONY: setup test example examples bench

setup:
	@.ci/setup

test: setup
	.venv/bin/python -m pytest -q

example: setup
	examples/run-hello

examples: setup
	examples/run-all

bench: setup
	.venv/bin/python benchmarks/run_all.py
