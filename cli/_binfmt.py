"""``pybuild binfmt``: which platforms this machine runs, and QEMU's handlers registered or removed.

Without flags it prints each platform and how it runs (native, emulated through an
interpreter, or why not), as ``docker run --privileged tonistiigi/binfmt`` reports its status
(``--format json`` gives that tool's ``{"supported": [...], "emulators": [...]}``).
``--install`` registers Debian's ``qemu-user-static`` handlers with the F flag (mounting
binfmt_misc if needed); ``--uninstall`` removes the ones pybuild registered.  Both need root.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--install", nargs="?", const="all", metavar="PLATFORM,...|all",
                        help="register qemu-user-static's handlers (all, or e.g. arm64,riscv64)")
    action.add_argument("--uninstall", nargs="?", const="all", metavar="PLATFORM,...|all",
                        help="remove the handlers pybuild registered")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="how to print the status")


def _selection(text: str) -> list[str] | None:
    items = [item.strip() for item in text.split(",") if item.strip()]
    return None if not items or "all" in items else items


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import install_handlers, runnable_platforms, uninstall_handlers

    if args.install is not None:
        for name in install_handlers(_selection(args.install)):
            print(f"installed {name}")
    elif args.uninstall is not None:
        for name in uninstall_handlers(_selection(args.uninstall)):
            print(f"uninstalled {name}")
    statuses = runnable_platforms()
    if args.format == "json":
        emulators = sorted({s.interpreter for s in statuses if s.how == "emulated"})
        print(json.dumps({"supported": [s.platform for s in statuses if s.runnable], "emulators": emulators}, indent=2))
        return 0
    width = max(len(status.platform) for status in statuses)
    for status in statuses:
        print(f"{status.platform.ljust(width)}  {_shown(status.how, status.interpreter, status.reason)}")
    if not all(status.runnable for status in statuses):
        print(f"hint: {next(status.hint for status in statuses if not status.runnable)}")
    return 0


def _shown(how: str, interpreter: str, reason: str) -> str:
    if how == "emulated":
        return f"emulated via {interpreter}"
    if how == "native":
        return "native"
    return f"not available: {reason}"
