"""The caller's answer, given before the work that only later builds need.

Once a build has reported its result its exit code is final; what it does after
that (the fast path's record of the build, writing its new snapshots out to
disk) is for the builds that follow.  A served build hands its client the exit
code at that point (``cli/server``'s child), so the command returns while the
child finishes; an in-process build has no one else to tell and goes on as it
always did, returning when everything is done.
"""

from __future__ import annotations

from collections.abc import Callable

_givers: list[Callable[[int], None]] = []


def give_with(giver: Callable[[int], None]) -> None:
    """``giver(code)`` is how this process tells its caller the exit code early."""
    _givers[:] = [giver]


def early() -> bool:
    """Whether someone waits for the code apart from the process's exit (a served build's client)."""
    return bool(_givers)


def give(code: int) -> None:
    """Tell the caller ``code`` now, once; nothing if no one waits for it separately."""
    if _givers:
        _givers.pop()(code)
