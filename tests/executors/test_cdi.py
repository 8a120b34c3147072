"""RUN --device's CDI side: reading spec files, resolving names, the edits a step gets.

BuildKit resolves names in solver/llbsolver/cdidevices/manager.go (``parseDevice``:
``kind=name``, the kind's first device for ``kind``, all of them for ``kind=*``,
the ``org.mobyproject.buildkit.device.class`` annotation for an unknown name;
an unregistered required device is "required device ... is not registered", an
optional one is skipped); the entitlement check is dag's (tests/dag/test_run_device.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pybuild.executors import BindMount, DeviceNode, load_cdi_registry
from pybuild.executors._cdi import CdiError


def write_spec(directory: Path, name: str, spec: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(spec))
    return path


def gpu_spec(**extra: Any) -> dict[str, Any]:
    return {
        "cdiVersion": "0.6.0",
        "kind": "vendor.com/gpu",
        "devices": [
            {"name": "a", "annotations": {"org.mobyproject.buildkit.device.class": "fast"},
             "containerEdits": {"env": ["GPU=a"], "deviceNodes": [{"path": "/dev/gpu-a", "type": "c", "major": 1, "minor": 3}]}},
            {"name": "b", "containerEdits": {"env": ["GPU=b"]}},
        ],
        "containerEdits": {"env": ["SHARED=1"]},
        **extra,
    }


def test_names_resolve_as_buildkit_first_of_kind_all_exact_and_class(tmp_path: Path) -> None:
    """``kind`` is the kind's first device, ``kind=*`` all, ``kind=name`` that one, and an unknown
    name the devices whose class annotation is that name (cdidevices/manager.go parseDevice)."""
    write_spec(tmp_path, "gpu.json", gpu_spec())
    registry = load_cdi_registry([str(tmp_path)])
    assert registry.resolve("vendor.com/gpu", True) == ("vendor.com/gpu=a",)
    assert registry.resolve("vendor.com/gpu=*", True) == ("vendor.com/gpu=a", "vendor.com/gpu=b")
    assert registry.resolve("vendor.com/gpu=b", True) == ("vendor.com/gpu=b",)
    assert registry.resolve("vendor.com/gpu=fast", True) == ("vendor.com/gpu=a",)
    assert registry.resolve("vendor.com/gpu=nope", False) == ()
    with pytest.raises(CdiError, match="required device 'vendor.com/gpu=nope' is not registered"):
        registry.resolve("vendor.com/gpu=nope", True)


def test_edits_apply_the_specs_own_once_then_each_devices(tmp_path: Path) -> None:
    """CDI's InjectDevices order: a spec's containerEdits the first time one of its devices
    is met, then the device's own."""
    write_spec(tmp_path, "gpu.json", gpu_spec())
    registry = load_cdi_registry([str(tmp_path)])
    edits = registry.edits(("vendor.com/gpu=a", "vendor.com/gpu=b"))
    assert edits.env == ("SHARED=1", "GPU=a", "GPU=b")
    assert edits.nodes == (DeviceNode("/dev/gpu-a", "c", 1, 3, "rwm", 0o666, 0, 0, host_path="/dev/gpu-a"),)


def test_a_node_without_numbers_takes_the_host_nodes(tmp_path: Path) -> None:
    """A deviceNodes entry may leave type, numbers and mode to the host's node (CDI fills them from hostPath)."""
    spec = {"cdiVersion": "0.6.0", "kind": "vendor.com/null", "devices": [
        {"name": "n", "containerEdits": {"deviceNodes": [{"path": "/dev/mynull", "hostPath": "/dev/null", "permissions": "rw"}]}}]}
    write_spec(tmp_path, "n.json", spec)
    (node,) = load_cdi_registry([str(tmp_path)]).edits(("vendor.com/null=n",)).nodes
    st = os.stat("/dev/null")
    assert (node.kind, node.major, node.minor, node.permissions) == ("c", os.major(st.st_rdev), os.minor(st.st_rdev), "rw")


def test_mounts_bind_what_the_spec_names_read_only_when_it_says_ro(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    spec = {"cdiVersion": "0.6.0", "kind": "vendor.com/lib", "devices": [{"name": "l", "containerEdits": {"mounts": [
        {"hostPath": str(lib), "containerPath": "/opt/lib", "options": ["ro", "bind"]},
        {"hostPath": str(lib), "containerPath": "/opt/rw", "type": "bind"},
    ]}}]}
    write_spec(tmp_path / "specs", "l.json", spec)
    edits = load_cdi_registry([str(tmp_path / "specs")]).edits(("vendor.com/lib=l",))
    assert edits.mounts == (BindMount(str(lib), "/opt/lib", readonly=True), BindMount(str(lib), "/opt/rw", readonly=False))


@pytest.mark.parametrize(
    "edits, message",
    [
        ({"hooks": [{"hookName": "createContainer", "path": "/usr/bin/nvidia-ctk"}]}, "containerEdits hooks, which pybuild does not apply"),
        ({"deviceNodes": [{"path": "/etc/passwd", "type": "c", "major": 1, "minor": 3}]}, "must be under /dev"),
        ({"deviceNodes": [{"path": "/dev/pts/0", "type": "c", "major": 1, "minor": 3}]}, "must be under /dev"),
        ({"deviceNodes": [{"path": "/dev/x", "type": "p", "major": 1, "minor": 3}]}, "pybuild makes c and b nodes"),
        ({"deviceNodes": [{"path": "/dev/x", "hostPath": "/etc/hostname"}]}, "not a device node"),
        ({"deviceNodes": [{"path": "/dev/x", "type": "c", "major": 1, "minor": 3, "permissions": "rwx"}]}, "subset of rwm"),
        ({"mounts": [{"hostPath": "/nonexistent-pybuild", "containerPath": "/x", "type": "bind"}]}, "does not exist on the host"),
        ({"mounts": [{"hostPath": "/tmp", "containerPath": "/x", "type": "tmpfs"}]}, "bind mounts only"),
        ({"env": ["NOEQUALS"]}, "NAME=value"),
    ],
)
def test_what_pybuild_cannot_apply_is_refused_naming_the_spec_file(tmp_path: Path, edits: dict[str, Any], message: str) -> None:
    """A spec pybuild cannot honour fails the step with the file's name, never half-applied:
    no OCI hooks (pybuild runs none), nodes only under /dev beside the sandbox's own."""
    if "/etc/hostname" in json.dumps(edits) and not os.path.exists("/etc/hostname"):
        pytest.skip("no /etc/hostname here")
    path = write_spec(tmp_path, "bad.json", {"cdiVersion": "0.6.0", "kind": "vendor.com/x", "devices": [{"name": "d", "containerEdits": edits}]})
    with pytest.raises(CdiError) as info:
        load_cdi_registry([str(tmp_path)]).edits(("vendor.com/x=d",))
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"kind": "nokind", "devices": [{"name": "d"}]}', '{"kind": "v.com/c", "devices": []}'])
def test_a_malformed_spec_file_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    tmp_path.joinpath("broken.json").write_text(text)
    with pytest.raises(CdiError, match="broken.json"):
        load_cdi_registry([str(tmp_path)])


def test_a_later_directorys_device_replaces_an_earlier_ones_and_yaml_is_not_read(tmp_path: Path) -> None:
    """Spec directories in order, a later one's device of the same name winning (CDI's cache
    priorities); only JSON is read: pybuild has no YAML parser."""
    write_spec(tmp_path / "one", "a.json", gpu_spec())
    later = gpu_spec()
    later["devices"] = [{"name": "a", "containerEdits": {"env": ["GPU=later"]}}]
    write_spec(tmp_path / "two", "a.json", later)
    (tmp_path / "two" / "c.yaml").write_text("kind: vendor.com/yaml\ndevices:\n- name: y\n")
    registry = load_cdi_registry([str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "missing")])
    assert "GPU=later" in registry.edits(("vendor.com/gpu=a",)).env
    assert registry.resolve("vendor.com/yaml=y", False) == ()
