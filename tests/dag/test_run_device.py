"""RUN --device in the graph: the Exec op carries the devices asked for (BuildKit's
``ExecOp.cdiDevices``, filled by frontend/dockerfile/dockerfile2llb/convert_rundevice.go:
optional unless ``required``), hashed only when present, so every other step keeps its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.dag import ExecOp
from pybuild.dag._canonical import canonical_json
from pybuild.dag._devices import step_devices
from pybuild.dag._keys import make_key
from pybuild.dag._ops import CdiDevice
from pybuild.errors import BuildError
from pybuild.executors import load_cdi_registry

from tests.dag.test_convert import execs, plan
from tests.executors.test_cdi import gpu_spec, write_spec


def test_run_device_reaches_the_exec_op_and_its_key() -> None:
    [plain] = execs(plan("FROM busybox\nRUN make\n"))
    [device] = execs(plan("FROM busybox\nRUN --device=vendor.com/gpu=0 --device=vendor.com/fpga,required make\n"))
    assert plain.devices == ()
    assert device.devices == (CdiDevice("vendor.com/gpu=0", False), CdiDevice("vendor.com/fpga", True))
    assert b"devices" not in canonical_json(plain)  # added_later: a step without --device keeps its digest
    base = {plain.rootfs: "sha256:key-of-base"}
    assert make_key(plain, base) != make_key(device, base)
    optional = ExecOp(rootfs=plain.rootfs, args=device.args, env=device.env, cwd=device.cwd, user=device.user,
                      devices=(CdiDevice("vendor.com/gpu=0"), CdiDevice("vendor.com/fpga")))
    assert make_key(optional, base) != make_key(device, base)  # required or not is part of the key, as in LLB


def test_the_device_entitlement_rule_is_buildkits(tmp_path: Path) -> None:
    """solver/llbsolver/vertex.go ValidateEntitlements: ``--allow device`` allows all;
    ``--allow device=NAME`` the devices NAME resolves to; the autoallow annotation a
    spec's devices; a step whose optional devices are all missing needs nothing."""
    write_spec(tmp_path, "gpu.json", gpu_spec())
    write_spec(tmp_path, "free.json", {"kind": "vendor.com/free", "devices": [{"name": "f"}],
                                       "annotations": {"org.mobyproject.buildkit.device.autoallow": "true"}})
    registry = load_cdi_registry([str(tmp_path)])
    a, b = CdiDevice("vendor.com/gpu=a"), CdiDevice("vendor.com/gpu=b")
    with pytest.raises(BuildError, match="^device vendor.com/gpu=a is requested by the build but not allowed$"):
        step_devices(registry, [a], frozenset())
    with pytest.raises(BuildError, match="devices vendor.com/gpu=a, vendor.com/gpu=b are requested"):
        step_devices(registry, [a, b], frozenset())
    assert step_devices(registry, [a, b], {"device"}) == ("vendor.com/gpu=a", "vendor.com/gpu=b")
    assert step_devices(registry, [a], {"device=vendor.com/gpu=a"}) == ("vendor.com/gpu=a",)
    with pytest.raises(BuildError, match="vendor.com/gpu=b is requested"):
        step_devices(registry, [a, b], {"device=vendor.com/gpu=fast"})
    assert step_devices(registry, [CdiDevice("vendor.com/free=f")], frozenset()) == ("vendor.com/free=f",)
    assert step_devices(registry, [CdiDevice("vendor.com/gpu=nope")], frozenset()) == ()
