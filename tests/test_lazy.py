"""Public names a package loads on first use (``pybuild._lazy``): imported when asked for, then bound."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types

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
