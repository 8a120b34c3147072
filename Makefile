# The README's two commands: `make example` and `make test`.
# Both set up what they need first (.ci/setup is idempotent).

.PHONY: setup test typecheck example examples bench

setup:
	@.ci/setup

test: setup typecheck
	.venv/bin/python -m pytest -q

# mypy over the packages (configured in pyproject.toml). It cannot follow the editable
# install's import hook, so it sees this directory as `pybuild` through a link in build/.
typecheck: setup
	@mkdir -p build/mypy && ln -sfn ../.. build/mypy/pybuild
	.venv/bin/python -m mypy

example: setup
	examples/run-hello

examples: setup
	examples/run-all

bench: setup
	.venv/bin/python benchmarks/run_all.py
