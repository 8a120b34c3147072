"""Public names a package loads on first use (``pybuild._lazy``): imported when asked for, then bound."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pybuild._lazy import lazy_getattr

from ._peers import strict


def test_a_deferred_name_is_imported_when_asked_for_then_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("lazy_probe")
    monkeypatch.setitem(sys.modules, "lazy_probe", package)
    getattr_ = lazy_getattr("lazy_probe", {"dumps": "json"})
    assert "dumps" not in vars(package)
    assert getattr_("dumps") is json.dumps
    assert vars(package)["dumps"] is json.dumps  # the next lookup does not come back here
    with pytest.raises(AttributeError, match="^module 'lazy_probe' has no attribute 'loads'$"):
        getattr_("loads")


# In a fresh interpreter: what the test process imported already would hide the laziness.
PROBE = """
import sys
import pybuild.oci as oci
loaded_at_import = "pybuild.oci.registry" in sys.modules
client = oci.RegistryClient
print(loaded_at_import, "pybuild.oci.registry" in sys.modules, vars(oci)["RegistryClient"] is client)
try:
    oci.no_such_name
except AttributeError as error:
    print(error)
"""


def test_a_package_loads_its_deferred_modules_on_first_use_only() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["False True True", "module 'pybuild.oci' has no attribute 'no_such_name'"]


REAPI_PROBE = """
import sys
import pybuild.reapi as reapi
digest = reapi.Digest.of(b"x")
print("grpc" in sys.modules, "google.protobuf" in sys.modules)
reapi.serialize(reapi.Directory())
print("grpc" in sys.modules, "google.protobuf" in sys.modules)
reapi.Remote
print("grpc" in sys.modules)
"""


def test_reapi_loads_protobuf_and_grpc_only_when_used() -> None:
    if importlib.util.find_spec("grpc") is None:
        reason = "the optional extra pybuild[remote] is not installed (.ci/setup installs it)"
        pytest.fail(reason, pytrace=False) if strict() else pytest.skip(reason)
    done = subprocess.run([sys.executable, "-c", REAPI_PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["False False", "False True", "True"]


LOCAL_BUILD_PROBE = """
import sys
import pybuild.cli.main, pybuild.cli._build, pybuild.dag, pybuild.oci, pybuild.executors, pybuild.cache
loaded = [m for m in ("pybuild.reapi", "pybuild.dag.remote", "pybuild.dag.bot", "grpc", "google.protobuf", "buildgrid")
          if m in sys.modules]
print(loaded)
"""


def test_a_local_build_loads_nothing_of_remote_execution() -> None:
    """What `pybuild build` imports without a remote flag leaves reapi, gRPC and protobuf alone."""
    done = subprocess.run([sys.executable, "-c", LOCAL_BUILD_PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# What a plain local build never needs: the CDI specs (RUN --device), pruning, a context sent as a
# tar, rewriting a Dockerfile, the hint for a misspelt instruction, HTTP dates of ADD <url>, lark
# (only a Dockerfile with an ONBUILD line is read by its parser: grammar/_lines.py).
NOT_IN_A_PLAIN_BUILD = (
    "pybuild.executors._cdi",
    "pybuild.cache._prune",
    "pybuild.cache._tarctx",
    "tarfile",
    "pybuild.grammar._format",
    "difflib",
    "email.utils",
    "lark",
)

PLAIN_BUILD_PROBE = """
import sys
from pybuild.cli.main import main
code = main(["build", "-q", "-t", "probe:lazy", sys.argv[1]])
print(code, "pybuild.dag._worker" in sys.modules, [m for m in sys.argv[2:] if m in sys.modules])
"""


def test_a_plain_local_build_loads_only_what_it_uses(tmp_path: Path) -> None:
    """A cold build pays for every import: the modules of rare paths load only on those paths."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (context / "a").write_text("a\n")
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}
    probe = [sys.executable, "-c", PLAIN_BUILD_PROBE, str(context), *NOT_IN_A_PLAIN_BUILD]
    done = subprocess.run(probe, capture_output=True, text=True, check=True, env=env)
    assert done.stdout.splitlines()[-1] == "0 True []"  # it built, through the worker, loading none of them
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\nFORM scratch\n")
    done = subprocess.run(probe, capture_output=True, text=True, check=True, env=env)
    assert "did you mean FROM?" in done.stderr  # the deferred imports still load where they are used
    assert "difflib" in done.stdout


CHECK_PROBE = """
import sys
from pybuild.cli.main import main
code = main(["check", sys.argv[1]])
print(code, "pybuild.oci._git" in sys.modules, "trio" in sys.modules, "pybuild.oci._network" in sys.modules)
"""


def test_checking_a_git_source_loads_neither_trio_nor_the_network_limits(tmp_path: Path) -> None:
    """`pybuild check` converts an ADD of a git URL (its URL and ref are checked) without fetching it."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nADD https://example.com/repo.git#v1.0 /src\n")
    done = subprocess.run([sys.executable, "-c", CHECK_PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 True False False"


IGNORE_RULES_PROBE = """
import sys
from pybuild.cache import DockerIgnore
print(DockerIgnore(("*.log",)).matches("a.log"), [m for m in sys.argv[1:] if m in sys.modules])
from pybuild.cache import CacheIndex
print("sqlite3" in sys.modules)
"""


def test_the_ignore_rules_load_without_the_stores() -> None:
    """The no-op fast path reads .dockerignore when a listing changed (a new ignored file): it
    loads the rules, not the stores, the index (sqlite3) or the hasher, 30 ms of imports."""
    heavy = ("sqlite3", "pybuild.cache._index", "pybuild.cache._content", "pybuild.cache._context", "pybuild.cache._root")
    done = subprocess.run([sys.executable, "-c", IGNORE_RULES_PROBE, *heavy], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["True []", "True"]
