"""``pybuild`` entry point: a lazy table of commands.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``.
Only the module of the command being run is imported.  ``pybuild build`` first
asks its fast path (``_fastpath``), which answers a rebuild with nothing to do
from a record before argparse, the errors or anything heavy is imported; then
the root's fork server (``cli/server``), which runs the build in a child of a
process that has imported everything already.  No server answered: the build
runs here, and starts one for the next build.
"""

from __future__ import annotations

import os
import sys

from pybuild import __version__

TYPE_CHECKING = False  # typing is not imported at start-up: a no-op build answers before it would be
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from pybuild.errors import PybuildError

# name -> (module, one-line summary).  Order is the order of `pybuild --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("pybuild.cli._build", "Build an image from a Dockerfile"),
    "import": ("pybuild.cli._import", "Create an image from a root filesystem tarball"),
    "parse": ("pybuild.cli._parse", "Parse a Dockerfile and print its instructions"),
    "check": ("pybuild.cli._check", "Check a Dockerfile against build-check rules"),
    "graph": ("pybuild.cli._graph", "Show the build graph of a Dockerfile"),
    "images": ("pybuild.cli._images", "List images"),
    "pull": ("pybuild.cli._pull", "Download an image from a registry"),
    "push": ("pybuild.cli._push", "Upload an image to a registry"),
    "tag": ("pybuild.cli._tag", "Give an image another name"),
    "rmi": ("pybuild.cli._rmi", "Remove images"),
    "history": ("pybuild.cli._history", "Show the history of an image"),
    "inspect": ("pybuild.cli._inspect", "Show an image's details as JSON"),
    "save": ("pybuild.cli._save", "Save images to a tar archive"),
    "load": ("pybuild.cli._load", "Load images from a tar archive"),
    "image": ("pybuild.cli._image", "Manage images (docker image ...)"),
    "compare": ("pybuild.cli._compare", "Compare two images layer by layer: sizes and wasted space"),
    "run": ("pybuild.cli._run", "Create and run a container from an image"),
    "ps": ("pybuild.cli._ps", "List containers"),
    "logs": ("pybuild.cli._logs", "Show a container's output"),
    "exec": ("pybuild.cli._exec", "Run a command in a running container"),
    "stop": ("pybuild.cli._stop", "Stop running containers"),
    "rm": ("pybuild.cli._rm", "Remove containers"),
    "diff": ("pybuild.cli._diff", "Show the changes in a container's filesystem"),
    "commit": ("pybuild.cli._commit", "Create an image from a container's changes"),
    "du": ("pybuild.cli._du", "Show the disk space the pybuild root uses"),
    "prune": ("pybuild.cli._prune", "Remove build cache (safe while builds run)"),
    "binfmt": ("pybuild.cli._binfmt", "Show the platforms this machine runs; register QEMU's handlers"),
    "worker": ("pybuild.cli._worker", "Run build steps for a Remote Execution API cluster"),
    "server": ("pybuild.cli.server._command", "Serve builds from a resident process (builds start it; it leaves when idle)"),
}


def _argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """argparse that raises UsageError instead of printing and exiting."""
    import argparse

    from pybuild.errors import UsageError

    class _ArgumentParser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]  # argparse says NoReturn; this raises, without importing typing at start-up
            raise UsageError(f"{self.prog}: {message}", hint=f"see '{self.prog} --help'")

    return _ArgumentParser(prog=prog, description=description)


def _top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        "usage: pybuild [--version] [--help] COMMAND [ARGS...]\n\n"
        "A Dockerfile build engine: parallel, content-addressed, OCI images.\n\n"
        f"Commands:\n{rows}\n\n"
        "Run 'pybuild COMMAND --help' for more on a command.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["build"]:
        from . import _fastpath

        answered = _fastpath.answer(args[1:])
        if answered is not None:
            return answered
        return _build(args)
    return _guarded(lambda: _dispatch(args))


def _build(args: list[str]) -> int:
    """The build by the root's server when one answers, else here (then a server is started
    for the next build, after this one, so it neither slows it down nor holds its pipes)."""
    from . import server

    if not server.wanted():
        return _guarded(lambda: _dispatch(args))
    from ._fastpath import root_path

    try:
        root = root_path(args[1:])
    except OSError:  # no working directory: the build says what it makes of that
        return _guarded(lambda: _dispatch(args))
    asked = server.serve(args, root)
    if asked.code is not None:
        global _may_skip_teardown
        _may_skip_teardown = True  # nothing of a build ran here: only output to flush
        return asked.code
    code = _guarded(lambda: _dispatch(args))
    if asked.start_server and os.path.isdir(asked.root):
        server.start_server(asked.root)
    return code


def serve_child(args: list[str], answer: Callable[[int], None]) -> int:
    """A served build, in the server's child: what ``main`` and ``entry`` do after the fast
    path and the server, ending the process (never returns into the server).  ``answer``
    gives the client its exit code once the build has reported its result (``_answer``)."""
    from . import _answer

    _answer.give_with(answer)
    code = _guarded(lambda: _dispatch(args))
    if _may_skip_teardown:
        _exit_without_teardown(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _guarded(call: Callable[[], int]) -> int:
    """``call``'s exit code; a pybuild error (or an interrupt) printed as one line and its code."""
    from pybuild.errors import PybuildError

    try:
        return call()
    except PybuildError as error:
        print(_shown(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            print("error: interrupted", file=sys.stderr)
            return 130
        errors = group.subgroup(PybuildError)
        if errors is None:
            raise
        first = _first_leaf(errors)
        print(_shown(first), file=sys.stderr)
        return first.exit_code
    except BrokenPipeError:
        # The reader went away (`pybuild images | head`): stop quietly.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _shown(error: PybuildError) -> str:
    """The error as printed; a URL's credentials in it (a Dockerfile line quoted) never are."""
    from pybuild.oci import redact_urls

    return redact_urls(error.render())


def _first_leaf(group: BaseExceptionGroup) -> PybuildError:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_leaf(error)
        return error  # type: ignore[return-value]  # the groups handled here hold PybuildErrors
    raise AssertionError("empty exception group")


def _dispatch(args: list[str]) -> int:
    import importlib

    from pybuild.errors import UsageError

    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_top_level_help())
        return 0 if args else 2
    if args[0] in ("-v", "--version", "version"):
        print(f"pybuild {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}", hint="run 'pybuild --help' for the list")
    module = importlib.import_module(COMMANDS[name][0])
    parser = _argument_parser(f"pybuild {name}", COMMANDS[name][1])
    module.add_arguments(parser)
    try:
        parsed = parser.parse_args(rest)
    except SystemExit as exit_:  # --help prints and exits 0
        return int(exit_.code or 0)
    if name == "build":  # what a record of this build is keyed by, taken before a rootless start changes ids
        from ._fastpath import Invocation

        parsed.fastpath = Invocation(rest)
    from ._rootless import run_as_root

    global _may_skip_teardown
    _may_skip_teardown = name in _TEARDOWN_FREE
    # a non-root caller runs the command as root in its user namespace, entered before trio starts
    return run_as_root(name, parsed, lambda chosen: int(module.run(chosen)), _guarded)


# A command that closes everything it opened (the build closes its root: SQLite checkpoints
# the index there) lets the process leave without the interpreter's teardown.
_TEARDOWN_FREE = frozenset({"build"})
_may_skip_teardown = False


def entry() -> None:
    """``pybuild`` (the console script; ``python -m pybuild`` too)."""
    code = main()
    if _may_skip_teardown:
        _exit_without_teardown(code)
    sys.exit(code)


def _exit_without_teardown(code: int) -> None:
    """Leave as the interpreter would, minus freeing every module and object one by one
    (tens of milliseconds of a small build, for memory the kernel takes back anyway).
    What its exit does that matters is done here: threads that are not daemons are
    joined (and thread pools shut down), atexit handlers run (the process's temp area
    is removed), stdout and stderr are flushed.  Anything unusual: the normal exit."""
    import atexit
    import os
    import threading

    shutdown = getattr(threading, "_shutdown", None)  # what Py_Finalize calls first
    if not callable(shutdown):
        sys.exit(code)
    shutdown()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the interpreter reports an unflushable stream as it always did
    os._exit(code)
