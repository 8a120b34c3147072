"""STOPSIGNAL values, checked as moby's signal.ParseSignal does."""

from __future__ import annotations

import signal

_NAMES = {name[3:]: int(value) for name, value in signal.Signals.__members__.items() if name.startswith("SIG") and not name.startswith("SIG_")}
_NAMES.update({f"RTMIN+{i}": signal.SIGRTMIN + i for i in range(0, signal.SIGRTMAX - signal.SIGRTMIN + 1)})
_NAMES.update({f"RTMAX-{i}": signal.SIGRTMAX - i for i in range(0, signal.SIGRTMAX - signal.SIGRTMIN + 1)})


def parse_signal(text: str) -> int:
    """The signal number ``text`` names (``SIGTERM``, ``term``, ``9``); ValueError if none."""
    if text.isdigit():
        number = int(text)
        if number == 0 or number not in _NAMES.values():
            raise ValueError(f"Invalid signal: {text}")
        return number
    name = text.upper().removeprefix("SIG")
    if name not in _NAMES:
        raise ValueError(f"Invalid signal: {text}")
    return _NAMES[name]
