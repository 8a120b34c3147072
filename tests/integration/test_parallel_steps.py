"""Independent RUN steps run at the same time by default, as BuildKit's do; --jobs N limits them.

Each step writes the host's uptime (``/proc/uptime``: one clock for every pid
namespace, in hundredths of a second) when it starts and when it ends; the
intervals are read back from the image, so the test sees what the steps did,
not how long the build took.
"""

from __future__ import annotations

from pathlib import Path

STAGES = 4


def dockerfile(tag: str, seconds: int) -> str:
    """Four stages that wait, each recording its interval, and a final stage collecting them."""
    stages = "".join(
        f"FROM busybox AS s{i}\n"
        f"RUN cat /proc/uptime > /start && sleep {seconds} && cat /proc/uptime > /end && echo {tag}-{i}\n"
        for i in range(STAGES)
    )
    collect = "".join(f"COPY --from=s{i} /start /s{i}.start\nCOPY --from=s{i} /end /s{i}.end\n" for i in range(STAGES))
    return stages + "FROM busybox\n" + collect


def intervals(open_image, ref: str) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    image = open_image(ref)
    seconds = [
        (float(image.read(f"/s{i}.start").split()[0]), float(image.read(f"/s{i}.end").split()[0])) for i in range(STAGES)
    ]
    return sorted(seconds)


def build(cli, tmp_path: Path, tag: str, *flags: str, seconds: int = 1) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / tag
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile(tag, seconds))
    cli("build", "--network=none", *flags, "-t", f"{tag}:test", str(context))


def test_independent_steps_run_at_once_by_default(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, tmp_path, "unlimited", seconds=2)  # starts may spread on a loaded machine: 2 s of slack
    steps = intervals(open_image, "unlimited:test")
    latest_start = max(start for start, _ in steps)
    earliest_end = min(end for _, end in steps)
    assert latest_start < earliest_end, f"the four steps did not all run together: {steps}"


def test_jobs_one_runs_them_one_after_another(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, tmp_path, "serial", "--jobs", "1")
    steps = intervals(open_image, "serial:test")
    for (_, end), (next_start, _) in zip(steps, steps[1:]):
        assert next_start >= end, f"steps overlapped under --jobs 1: {steps}"


def test_jobs_two_runs_two_at_a_time(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, tmp_path, "two", "--jobs", "2", seconds=2)
    steps = intervals(open_image, "two:test")
    for moment, _ in steps:  # at each start, count the steps running then
        running = sum(1 for start, end in steps if start <= moment < end)
        assert running <= 2, f"more than two steps at once under --jobs 2: {steps}"
    assert any(start < end_other for (start, _), (_, end_other) in zip(steps[1:], steps)), f"no two steps overlapped: {steps}"
