"""RUN --device's values, read as BuildKit's ``ParseDevice``
(frontend/dockerfile/instructions/commands_rundevice.go): CSV fields, the first
bare one the name (``name=`` also), ``required`` alone or with a Go bool; a
device is optional unless ``required``."""

from __future__ import annotations

import pytest

from pybuild.errors import DockerfileSyntaxError
from pybuild.grammar import Run, RunDevice, parse


def run_of(flags: str) -> Run:
    dockerfile = parse(f"FROM scratch\nRUN {flags} true\n".encode())
    (instruction,) = dockerfile.stages[0].instructions
    assert isinstance(instruction, Run)
    return instruction


def test_device_values_are_repeatable_and_optional_unless_required() -> None:
    run = run_of(
        "--device=vendor.com/gpu=0 --device=vendor.com/gpu=1,required --device=name=vendor.com/fpga,required=false"
        " --device=vendor.com/x=*,required=true"
    )
    assert run.devices == (
        RunDevice("vendor.com/gpu=0", False),
        RunDevice("vendor.com/gpu=1", True),
        RunDevice("vendor.com/fpga", False),
        RunDevice("vendor.com/x=*", True),
    )
    assert run_of("").devices == ()


@pytest.mark.parametrize(
    "value, message",
    [
        ("vendor.com/gpu=0,required=maybe", "invalid value for required: maybe"),
        ("vendor.com/gpu=0,colour=red", "unexpected key 'colour'"),
        ("vendor.com/gpu=0,extra", "invalid field 'extra' must be a key=value pair"),
        ("vendor.com/gpu=0,name=vendor.com/gpu=1", "device name already set"),
        ("required", "needs a device name"),
        ("gpu0", "not a CDI device name"),
        ("vendor.com/=x", "not a CDI device name"),
        ('"vendor.com/gpu=0', "failed to parse csv devices"),
        ("vendor.com/gpu=../../x", "not a CDI device name"),
    ],
)
def test_a_bad_device_value_is_a_syntax_error_at_its_line(value: str, message: str) -> None:
    with pytest.raises(DockerfileSyntaxError, match="Dockerfile:2") as info:
        parse(f"FROM scratch\nRUN --device='{value}' true\n".encode(), file="Dockerfile")
    assert message in str(info.value)
