"""Parser throughput and CLI start-up time.

    .venv/bin/python benchmarks/parse.py

    .venv/bin/python benchmarks/parse.py --limits

Measures (median of several runs): parse() of a generated 50,000-line
multi-stage Dockerfile; parse() of every BuildKit conformance file; the wall
time of `pybuild --version` as a fresh process.  Targets (issue 2): at least
50,000 lines/s, and `pybuild --version` under 150 ms.

With --limits (issue 13), `pybuild parse -f FILE` on large and hostile files,
each in a fresh process: wall time and peak RSS.  A 20 MB ENV line and 200 MB
of comments are refused at once (16 MiB file limit), as is a 5 MB ENV line
(4 MiB instruction limit) and a file of more than 250,000 instructions; a
4 MB ENV line, 15 MB of comments and 100,000 instructions parse.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO.parent / "shared" / "conformance" / "buildkit-parser" / "testfiles"


def generate(lines: int = 50_000, seed: int = 1) -> str:
    """A multi-stage Dockerfile mixing every common form, `lines` physical lines long."""
    rng = random.Random(seed)
    out: list[str] = []
    count = stage = 0
    while count < lines:
        if count % 250 == 0:
            source = f"stage{stage - 1}" if stage else "busybox"
            out.append(f"FROM {source} AS stage{stage}")
            stage += 1
            count += 1
            continue
        kind = rng.randrange(9)
        if kind == 0:
            out.append(f"RUN echo {count} && \\\n    ls -la /tmp/{count}")
            count += 2
        elif kind == 1:
            out.append(f'ENV A{count}=value{count} B{count}="quoted {count}"')
            count += 1
        elif kind == 2:
            out.append(f"COPY --chown=1000:1000 --from=stage0 src/{count} /app/{count}")
            count += 1
        elif kind == 3:
            out.append(f'CMD ["sh", "-c", "echo {count}"]')
            count += 1
        elif kind == 4:
            out.append(f"# comment {count}")
            count += 1
        elif kind == 5:
            out.append(f"RUN <<EOF\necho {count}\necho more\nEOF")
            count += 4
        elif kind == 6:
            out.append(f"LABEL version{count}={count} other=x")
            count += 1
        elif kind == 7:
            out.append(f"RUN --mount=type=cache,target=/root/.cache pip install pkg{count}")
            count += 1
        else:
            out.append(f"WORKDIR /app/{count}")
            count += 1
    return "\n".join(out) + "\n"


def median_seconds(fn, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from pybuild.grammar import parse

    parse("FROM x\n")  # load the grammar once, as a build does
    text = generate()
    lines = text.count("\n")
    seconds = median_seconds(lambda: parse(text))
    print(f"generated Dockerfile: {lines} lines, {len(text) / 1e6:.1f} MB: {seconds * 1000:.0f} ms, {lines / seconds:,.0f} lines/s")

    files = [(p / "Dockerfile").read_bytes() for p in sorted(CONFORMANCE.iterdir())]
    conformance_lines = sum(f.count(b"\n") + 1 for f in files)

    def parse_all() -> None:
        from pybuild.grammar import parse_ast

        for data in files:
            parse_ast(data)

    seconds = median_seconds(parse_all, runs=20)
    print(f"conformance files: {len(files)} files, {conformance_lines} lines: {seconds * 1000:.1f} ms, {conformance_lines / seconds:,.0f} lines/s")

    pybuild = REPO / ".venv" / "bin" / "pybuild"
    command = [str(pybuild)] if pybuild.exists() else [sys.executable, "-m", "pybuild"]
    subprocess.run([*command, "--version"], check=True, capture_output=True)
    seconds = median_seconds(lambda: subprocess.run([*command, "--version"], check=True, capture_output=True), runs=15)
    print(f"`pybuild --version`: {seconds * 1000:.0f} ms (median of 15)")


LIMIT_CASES = {
    "20 MB ENV line": lambda out: _write(out, b"FROM scratch\nENV A=", (b"x" * 1_000_000 for _ in range(20)), b"\n"),
    "5 MB ENV line": lambda out: _write(out, b"FROM scratch\nENV A=", (b"x" * 1_000_000 for _ in range(5)), b"\n"),
    "4 MB ENV line": lambda out: _write(out, b"FROM scratch\nENV A=", (b"x" * 1_000_000 for _ in range(4)), b"\n"),
    "4 MB of --flags": lambda out: _write(out, b"FROM scratch\nCOPY ", (b"--a=b " * 100_000 for _ in range(6)), b"x y\n"),
    "200 MB of comments": lambda out: _write(out, b"", (b"# a comment line\n" * 62_500 for _ in range(200)), b"FROM scratch\n"),
    "15 MB of comments": lambda out: _write(out, b"", (b"# a comment line\n" * 62_500 for _ in range(15)), b"FROM scratch\n"),
    "16 MB of 'X' lines": lambda out: _write(out, b"FROM scratch\n", (b"X\n" * 500_000 for _ in range(16)), b""),
    "249,999 'RUN a' lines": lambda out: _write(out, b"FROM scratch\n", (b"RUN a\n" * 249_999 for _ in range(1)), b""),
    "100,000 instructions": lambda out: _write(
        out, b"FROM scratch\n", (f"RUN echo {i} && ls /tmp/{i}\n".encode() for i in range(100_000)), b""
    ),
}


def _write(path: Path, head: bytes, chunks, tail: bytes) -> None:  # type: ignore[no-untyped-def]
    with open(path, "wb") as out:
        out.write(head)
        for chunk in chunks:
            out.write(chunk)
        out.write(tail)


def limits() -> None:
    import tempfile

    pybuild = REPO / ".venv" / "bin" / "pybuild"
    command = [str(pybuild)] if pybuild.exists() else [sys.executable, "-m", "pybuild"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in LIMIT_CASES.items():
            path = Path(tmp) / "Dockerfile"
            make(path)
            size = path.stat().st_size
            timed = ["/usr/bin/time", "-f", "%e %M", *command, "parse", "-f", str(path)]
            result = subprocess.run(timed, capture_output=True, text=True)
            seconds, peak_kib = result.stderr.strip().splitlines()[-1].split()
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            outcome = errors[0][:90] if errors else "parsed"
            print(f"{name:22} {size / 1e6:7.1f} MB  {float(seconds):6.2f} s  {int(peak_kib) / 1024:6.0f} MiB peak RSS  {outcome}")


if __name__ == "__main__":
    if "--limits" in sys.argv[1:]:
        limits()
    else:
        main()
