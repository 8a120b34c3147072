"""The Action format of a remote step (dag/remote/_action.py): round trips, refusals,
and one Action digest for one step whatever machine encodes it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pybuild.dag import ExecOp
from pybuild.dag._ops import CdiDevice, RunMount
from pybuild.dag.remote import (
    BadStep,
    cache_action,
    RemoteResult,
    decode_result,
    decode_step,
    encode_step,
    layer_path,
    platform_properties,
    remote_step,
    result_json,
    step_json,
)

REPO = Path(__file__).resolve().parent.parent.parent
BASE = "sha256:" + "b" * 64
CACHE_SOURCE = "sha256:" + "c" * 64
DIFF_A, DIFF_B, DIFF_C = ("sha256:" + hashlib.sha256(n).hexdigest() for n in (b"a", b"b", b"c"))
KEY = "sha256:" + "d" * 64


def make_op(**changes: object) -> ExecOp:
    op = ExecOp(
        rootfs=BASE,
        args=("/bin/sh", "-c", "echo hi > /out"),
        env=("PATH=/usr/bin:/bin", "A=1"),
        cwd="/work",
        user="1000:1000",
        mounts=(
            RunMount("tmpfs", "/tmp", size=1 << 20),
            RunMount("cache", "/root/.cache", source=CACHE_SOURCE, cache_id="pip", sharing="locked", readonly=False, mode=0o755),
            RunMount("bind", "/src", source=BASE, source_path="/app"),
        ),
        proxy_env=("HTTP_PROXY=http://proxy.local:3128",),
    )
    return dataclasses.replace(op, **changes)  # type: ignore[arg-type]


CHAINS = {BASE: (DIFF_B, DIFF_A), CACHE_SOURCE: (DIFF_C,)}



def test_a_step_survives_step_json() -> None:
    step = remote_step(make_op(), KEY, "linux/amd64", CHAINS)
    again = decode_step(step_json(step))
    assert again == step
    assert again.op.rootfs == "rootfs" and again.chains["rootfs"] == (DIFF_B, DIFF_A)
    # a mount of the rootfs's own op shares its name; another source gets its index
    assert [m.source for m in again.op.mounts] == [None, "mount:1", "rootfs"]
    assert again.chains["mount:1"] == (DIFF_C,)
    assert again.diff_ids() == tuple(sorted({DIFF_A, DIFF_B, DIFF_C}))


def test_what_stays_on_the_client_is_not_in_step_json() -> None:
    step = remote_step(make_op(ignore_cache=True), KEY, "linux/amd64", CHAINS)
    document = step_json(step)
    assert b"proxy.local" not in document and b"HTTP_PROXY" not in document
    assert BASE.encode() not in document  # op digests carry upstream cache-neutral fields
    assert decode_step(document).op.proxy_env == () and decode_step(document).op.ignore_cache is False


def test_fields_added_later_round_trip() -> None:
    op = make_op(security="insecure", platform="linux/arm64", devices=(CdiDevice("vendor.com/gpu=0", True),), rootfs=None, mounts=())
    step = remote_step(op, KEY, "linux/arm64", {})
    assert decode_step(step_json(step)) == step


def test_step_json_is_deterministic_json() -> None:
    document = step_json(remote_step(make_op(), KEY, "linux/amd64", CHAINS))
    parsed = json.loads(document)
    assert document == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert parsed["version"] == 1 and parsed["key"] == KEY and parsed["platform"] == "linux/amd64"


def _tampered(change: object) -> bytes:
    document = json.loads(step_json(remote_step(make_op(), KEY, "linux/amd64", CHAINS)))
    change(document)  # type: ignore[operator]
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.update(version=2), "format version 2"),
        (lambda d: d.update(key="latest"), "key"),
        (lambda d: d.update(extra=1), "unknown field extra"),
        (lambda d: d["op"].update(args="ls"), "op.args is not a list"),
        (lambda d: d["op"].update(args=[1]), "op.args is not a string"),
        (lambda d: d["op"].pop("cwd"), "no field cwd"),
        (lambda d: d["op"]["mounts"][0].update(size="big"), "op.mounts.0.size has the wrong type"),
        (lambda d: d["op"]["mounts"][0].update(readonly=1), "readonly has the wrong type"),
        (lambda d: d["op"]["mounts"][0].update(kind="secret"), "never runs remotely"),
        (lambda d: d["inputs"].update(rootfs=["../../etc/passwd"]), "not a diffID"),
        (lambda d: d["inputs"].pop("mount:1"), "do not agree"),
        (lambda d: d["op"].update(rootfs="/host/path"), "do not agree"),
    ],
)
def test_a_step_this_pybuild_would_not_write_is_refused(change: object, words: str) -> None:
    with pytest.raises(BadStep) as caught:
        decode_step(_tampered(change))
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_garbage_is_refused_in_one_line() -> None:
    for data in (b"\xff\xfe", b"[1, 2]", b"{"):
        with pytest.raises(BadStep):
            decode_step(data)


def test_result_json_round_trip_and_refusals() -> None:
    result = RemoteResult(DIFF_A, empty=True)
    assert decode_result(result_json(result)) == result
    for bad in (b"{}", b'{"version":1,"diff_id":"sha256:zz"}', b'{"version":1,"diff_id":"%s","empty":"no"}' % DIFF_A.encode(), b"nope"):
        with pytest.raises(BadStep):
            decode_result(bad)


def test_platform_properties_name_the_isa() -> None:
    assert platform_properties("linux/arm64/v8") == (("ISA", "arm64"), ("OSFamily", "linux"), ("pybuild-sandbox", "1"))
    assert dict(platform_properties("linux/amd64"))["ISA"] == "amd64"


# ---------------------------------------------------------------- the REAPI messages


def test_the_input_root_names_every_layer_by_its_diff_id() -> None:
    from pybuild import reapi

    sizes = {DIFF_A: 10, DIFF_B: 20, DIFF_C: 30}
    encoded = encode_step(remote_step(make_op(), KEY, "linux/amd64", CHAINS), sizes)
    assert {d.hash for d in encoded.layers} == {d.split(":")[1] for d in sizes}
    assert {encoded.layers[d]: d.size_bytes for d in encoded.layers} == sizes
    assert encoded.action_digest == reapi.Digest.of(encoded.blobs[encoded.action_digest])
    for digest, data in encoded.blobs.items():  # every small blob is named by its bytes
        assert digest == reapi.Digest.of(data)
    command = reapi.parse_command(encoded.blobs[encoded.action.command_digest])
    assert list(command.arguments) == ["pybuild-step", "step.json"]
    assert set(command.output_paths) >= {"layer.tar", "result.json"}
    assert dict(encoded.action.platform)["ISA"] == "amd64"
    root = reapi.parse_directory(encoded.blobs[encoded.action.input_root_digest])
    assert [f.name for f in root.files] == ["step.json"]
    assert decode_step(encoded.blobs[root.files[0].digest]) == encoded.step
    (layers_node,) = root.directories
    layers = reapi.parse_directory(encoded.blobs[layers_node.digest])
    assert sorted(f.name for f in layers.files) == sorted(layer_path(d).split("/")[1] for d in sizes)


def test_another_platform_is_another_action() -> None:
    step = remote_step(make_op(), KEY, "linux/amd64", CHAINS)
    sizes = {DIFF_A: 10, DIFF_B: 20, DIFF_C: 30}
    arm = dataclasses.replace(step, platform="linux/arm64")
    assert encode_step(step, sizes).action_digest != encode_step(arm, sizes).action_digest


ENCODE = textwrap.dedent(
    """
    import os, sys, time
    sys.path[:0] = [os.environ["TEST_DIR"]]
    from test_action import CHAINS, KEY, make_op
    from pybuild.dag.remote import encode_step, remote_step
    sizes = {d: 10 + i for i, d in enumerate(sorted({x for c in CHAINS.values() for x in c}))}
    op = make_op(proxy_env=tuple(f"{k}={v}" for k, v in os.environ.items() if k.endswith("PROXY")))
    print(encode_step(remote_step(op, KEY, "linux/amd64", CHAINS), sizes).action_digest.hash)
    """
)


def test_the_same_step_is_the_same_action_on_any_machine(tmp_path: Path) -> None:
    """Two processes with other working directories, environments (order, proxies),
    time zones, hash seeds and clocks give one Action digest."""
    digests = set()
    for index, extra in enumerate(({"HTTP_PROXY": "http://a:1", "TZ": "UTC"}, {"TZ": "Asia/Tokyo", "ZZ": "1", "HTTPS_PROXY": "http://b:2"})):
        cwd = tmp_path / f"machine{index}"
        cwd.mkdir()
        env = {"PYTHONHASHSEED": str(index + 1), "TEST_DIR": str(Path(__file__).parent), **extra}
        env |= {k: v for k, v in reversed(list(os.environ.items())) if k not in env and not k.endswith("PROXY")}
        run = subprocess.run([sys.executable, "-c", ENCODE], cwd=cwd, env=env, capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        digests.add(run.stdout.strip())
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_a_cache_action_is_named_by_the_key_and_platform_alone() -> None:
    from pybuild import reapi

    first = cache_action(KEY, "linux/amd64")
    assert cache_action(KEY, "linux/amd64") == first
    assert cache_action("sha256:" + "e" * 64, "linux/amd64").action_digest != first.action_digest
    assert cache_action(KEY, "linux/arm64").action_digest != first.action_digest
    assert first.action_digest == reapi.Digest.of(first.blobs[first.action_digest])
    action = reapi.parse_action(first.blobs[first.action_digest])
    (step_file,) = reapi.parse_directory(first.blobs[action.input_root_digest]).files
    with pytest.raises(BadStep):  # a worker asked to run it refuses: it is not a step
        decode_step(first.blobs[step_file.digest])
