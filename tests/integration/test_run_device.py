"""RUN --device end to end (Dockerfile 1.27's stable flag, BuildKit 0.20+): CDI devices
from admin-written specs (solver/llbsolver/cdidevices/manager.go), behind the ``device``
entitlement (solver/llbsolver/vertex.go ValidateEntitlements), optional unless
``required`` (frontend/dockerfile/dockerfile2llb/convert_rundevice.go).  The spec
directories come from PYBUILD_CDI_SPEC_DIRS, so the tests write none under /etc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import pybuild, read_image_file

SPEC = {
    "cdiVersion": "0.6.0",
    "kind": "example.com/test",
    "devices": [{
        "name": "zero",
        "containerEdits": {
            # /dev/null's numbers under another name: harmless to write to
            "deviceNodes": [{"path": "/dev/pybuild-test0", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620}],
            "env": ["TESTENV=from-cdi"],
        },
    }],
}


@pytest.fixture
def cdi(tmp_path: Path) -> dict[str, str]:
    """A spec directory with SPEC and a read-only library mount; the env that points pybuild at it."""
    specs = tmp_path / "cdi"
    specs.mkdir()
    lib = tmp_path / "vendor-lib"
    lib.mkdir()
    (lib / "lib.txt").write_text("vendor library\n")
    spec = json.loads(json.dumps(SPEC))
    spec["devices"][0]["containerEdits"]["mounts"] = [{"hostPath": str(lib), "containerPath": "/opt/vendor", "options": ["ro", "bind"]}]
    (specs / "test.json").write_text(json.dumps(spec))
    return {"PYBUILD_CDI_SPEC_DIRS": str(specs)}


def context_with(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


USES_THE_DEVICE = (
    "FROM busybox:latest\n"
    "RUN --device=example.com/test=zero ls -ln /dev/pybuild-test0 > /node && echo x > /dev/pybuild-test0"
    " && echo $TESTENV > /out && cat /opt/vendor/lib.txt > /lib && ! touch /opt/vendor/new\n"
)


def test_run_device_gets_the_node_env_and_mounts_and_leaves_no_node_in_the_layer(  # type: ignore[no-untyped-def]
    root: Path, busybox_image: str, tmp_path: Path, cdi: dict[str, str], open_image
) -> None:
    """With ``--allow device`` the step sees the spec's node (its numbers and mode, writable:
    the devices cgroup allows it), its env and its read-only mount; the node lives in the
    sandbox's /dev tmpfs and the mount is undone, so neither reaches the layer."""
    ctx = context_with(tmp_path, USES_THE_DEVICE)
    pybuild("build", "-t", "dev:1", "--allow", "device", str(ctx), root=root, env=cdi)
    image = open_image("dev:1")
    assert image.read("out") == "from-cdi\n"
    assert image.read("lib") == "vendor library\n"
    node = image.read("node").split()
    assert node[0] == "crw--w----" and node[4:6] == ["1,", "3"]
    assert image.find("dev/pybuild-test0") is None
    assert image.find("opt/vendor") is None and image.find("opt/vendor/new") is None


def unused_char_major() -> int:
    """A major of the "local/experimental use" range no driver here registered: opening such a
    node fails with EPERM if the devices cgroup refuses it, ENXIO (no driver) if it allows it."""
    used = {int(line.split()[0]) for line in Path("/proc/devices").read_text().split("Block devices:")[0].splitlines()[1:] if line.strip()}
    for major in (60, 61, 62, 63, 120, 121, 122, 123):
        if major not in used:
            return major
    pytest.skip("every experimental character major is registered here")


def test_the_devices_cgroup_allows_a_run_devices_node_and_no_other(root: Path, busybox_image: str, tmp_path: Path) -> None:
    """The step's devices cgroup gets a rule for each node of the spec (runc does the same
    from the OCI spec's linux.resources.devices, which CDI fills): the node opens (the
    kernel then finds no driver, ENXIO), while the same numbers made by ``mknod`` in a step
    without --device stay refused (EPERM), as in Docker's default rules."""
    major = unused_char_major()
    specs = tmp_path / "cdi"
    specs.mkdir()
    node = {"path": "/dev/pybuild-test1", "type": "c", "major": major, "minor": 0, "permissions": "rw"}
    spec = {"cdiVersion": "0.6.0", "kind": "example.com/exp", "devices": [{"name": "d", "containerEdits": {"deviceNodes": [node]}}]}
    (specs / "exp.json").write_text(json.dumps(spec))
    ctx = context_with(
        tmp_path,
        "FROM busybox:latest\n"
        "RUN --device=example.com/exp=d cat /dev/pybuild-test1 2> /with || true\n"
        f"RUN mknod /tmp/other c {major} 0 && (cat /tmp/other 2> /without || true) && rm /tmp/other\n",
    )
    pybuild("build", "-t", "dev:5", "--allow", "device", str(ctx), root=root, env={"PYBUILD_CDI_SPEC_DIRS": str(specs)})
    with_rule = read_image_file(root, "dev:5", "with")
    without_rule = read_image_file(root, "dev:5", "without")
    assert "No such device or address" in with_rule, with_rule
    assert "Operation not permitted" in without_rule, without_rule


def test_run_device_is_refused_without_the_device_entitlement(root: Path, busybox_image: str, tmp_path: Path, cdi: dict[str, str]) -> None:
    """BuildKit: "device example.com/test=zero is requested by the build but not allowed",
    before any step runs; ``--allow device=NAME`` grants that device alone."""
    ctx = context_with(tmp_path, "FROM busybox:latest\nRUN echo ran > /ran\n" + USES_THE_DEVICE.split("\n", 1)[1])
    result = pybuild("build", "-t", "dev:2", str(ctx), root=root, env=cdi, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Dockerfile:3: device example.com/test=zero is requested by the build but not allowed" in result.stderr
    assert "--allow device" in result.stderr
    assert "dev:2" not in pybuild("images", root=root).stdout
    pybuild("build", "-t", "dev:3", "--allow", "device=example.com/test=zero", str(ctx), root=root, env=cdi)


def test_an_unknown_device_fails_when_required_and_is_skipped_otherwise(  # type: ignore[no-untyped-def]
    root: Path, busybox_image: str, tmp_path: Path, cdi: dict[str, str], open_image
) -> None:
    """cdidevices/manager.go: a required unregistered device is "required device ... is not
    registered"; an optional one (the default) is skipped with a warning, no entitlement needed."""
    ctx = context_with(tmp_path, "FROM busybox:latest\nRUN --device=example.com/test=nope,required true\n")
    result = pybuild("build", "--allow", "device", str(ctx), root=root, env=cdi, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Dockerfile:2: required device 'example.com/test=nope' is not registered" in result.stderr
    ctx = context_with(tmp_path, "FROM busybox:latest\nRUN --device=example.com/test=nope ls /dev > /devs\n")
    result = pybuild("build", "-t", "dev:4", str(ctx), root=root, env=cdi)
    assert "optional device 'example.com/test=nope' is not registered" in result.stdout + result.stderr
    assert "pybuild-test0" not in open_image("dev:4").read("devs")


def test_a_malformed_spec_is_an_error_naming_the_file(root: Path, busybox_image: str, tmp_path: Path, cdi: dict[str, str]) -> None:
    broken = Path(cdi["PYBUILD_CDI_SPEC_DIRS"]) / "broken.json"
    broken.write_text("{ not json")
    ctx = context_with(tmp_path, USES_THE_DEVICE)
    result = pybuild("build", "--allow", "device", str(ctx), root=root, env=cdi, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"invalid CDI spec {broken}: not JSON" in result.stderr


def test_an_unknown_entitlement_still_names_the_known_ones(root: Path, tmp_path: Path) -> None:
    ctx = context_with(tmp_path, "FROM scratch\n")
    result = pybuild("build", "--allow", "devices", str(ctx), root=root, check=False)
    assert result.returncode == 2 and "unknown entitlement 'devices'" in result.stderr and "device=NAME" in result.stderr
