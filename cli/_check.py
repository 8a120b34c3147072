"""``pybuild check``: BuildKit's build checks and pybuild's layer lessons, without building.

Exit status as ``docker build --check``: 0 when only warnings were found (or
none), 1 when the Dockerfile's ``# check=error=true`` is set and something
was found, or when the Dockerfile does not parse; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild.errors import PybuildError, UsageError

from ._io import read_dockerfile

if TYPE_CHECKING:
    from pybuild.dag import CheckReport
    from pybuild.oci import ImageStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "context", nargs="?", default=".",
        help="the build context, read for .dockerignore and what COPY brings in (default: .)",
    )
    parser.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="how to print the findings")
    parser.add_argument(
        "--build-arg", action="append", default=[], metavar="K=V",
        help="a build-time variable, as for build (K alone takes it from the environment)",
    )
    parser.add_argument("--target", help="the stage whose image the layer checks look at (default: the last)")
    parser.add_argument("--root", help="the pybuild root whose images describe base images (default: $PYBUILD_ROOT)")


def _local_images(root: str | None) -> ImageStore | None:
    """The local image store, if there is one: base image configs help some rules.

    A check never creates a root and never fails because of one.
    """
    from pybuild.cache import default_root_path

    path = Path(root) if root else default_root_path()
    if not (path / "index.db").is_file():
        return None
    try:
        from ._runtime import image_store, open_root

        return image_store(open_root(str(path)))
    except PybuildError:
        return None


def run(args: argparse.Namespace) -> int:
    from pybuild.dag import check_dockerfile

    from ._build import _pairs  # --build-arg as the build reads it

    context = Path(args.context)
    if not context.is_dir():
        raise UsageError(f"{args.context}: the build context is not a directory", hint="pybuild check [-f FILE] [CONTEXT]")
    file = args.file if args.file is not None else str(context / "Dockerfile")
    data, name = read_dockerfile(file)
    report = check_dockerfile(
        data,
        name,
        build_args=_pairs(args.build_arg, "--build-arg", from_env=True),
        context_dir=context,
        dockerfile_path=None if file == "-" else file,
        images=_local_images(args.root),
        target=args.target,
    )
    print_report(report, name, args.format)
    return 1 if report.failed else 0


def print_report(report: CheckReport, name: str, form: str = "text") -> None:
    """The warnings as ``FILE:LINE: Rule: message`` lines with hints, or as JSON."""
    if form == "json":
        json.dump(_as_json(name, report), sys.stdout, indent=2, ensure_ascii=False)
        print()
        return
    for warning in report.warnings:
        print(f"{name}:{warning.line}: {warning.rule}: {warning.message}")
        print(f"  hint: {warning.hint}")
    print(_summary(report), file=sys.stderr)


def _summary(report: CheckReport) -> str:
    count = len(report.warnings)
    if not count:
        return "check complete, no warnings found"
    text = f"check complete, {count} warning{'s' if count != 1 else ''} found"
    if report.failed:
        rules = ", ".join(sorted({w.rule for w in report.warnings}))
        text += f"\nerror: lint violation found for rules: {rules} (the Dockerfile sets check error=true)"
    return text


def _as_json(name: str, report: Any) -> dict[str, Any]:
    return {
        "file": name,
        "errors_requested": report.errors_requested,
        "failed": report.failed,
        "warnings": [
            {
                "rule": w.rule,
                "line": w.line,
                "end_line": w.end_line,
                "message": w.message,
                "hint": w.hint,
                "url": w.url,
                "severity": w.severity,
            }
            for w in report.warnings
        ],
    }
