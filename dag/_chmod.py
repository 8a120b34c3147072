"""``--chmod`` values: octal (0755) or symbolic (u+x,go-w), as BuildKit accepts them."""

from __future__ import annotations

import re

_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+$")


def validate_chmod(value: str) -> None:
    if re.fullmatch(r"[0-9]+", value):
        if not re.fullmatch(r"[0-7]+", value) or int(value, 8) > 0o7777:
            raise ValueError(f"invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777")
        return
    for clause in value.split(","):
        if not _SYMBOLIC.match(clause):
            raise ValueError(f"invalid chmod parameter: '{value}'. it should be octal or symbolic (u+x,go-w)")


def apply_chmod(value: str, mode: int, is_dir: bool) -> int:
    """The permission bits ``value`` gives a file whose bits are ``mode``."""
    if re.fullmatch(r"[0-7]+", value):
        return int(value, 8)
    bits = mode & 0o7777
    for clause in value.split(","):
        match = re.match(r"^([ugoa]*)(.*)$", clause)
        assert match
        who, rest = match.groups()
        who = who or "a"
        for op, perms in re.findall(r"([-+=])([rwxXstugo]*)", rest):
            mask = 0
            for w in who:
                for p in perms:
                    mask |= _bit(w, p, bits, is_dir)
            if op == "+":
                bits |= mask
            elif op == "-":
                bits &= ~mask
            else:
                clear = 0
                for w in who:
                    clear |= {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}[w]
                bits = (bits & ~clear) | mask
    return bits


def _bit(who: str, perm: str, current: int, is_dir: bool) -> int:
    shifts = {"u": 6, "g": 3, "o": 0}
    targets = "ugo" if who == "a" else who
    out = 0
    for w in targets:
        shift = shifts[w]
        if perm == "r":
            out |= 0o4 << shift
        elif perm == "w":
            out |= 0o2 << shift
        elif perm == "x":
            out |= 0o1 << shift
        elif perm == "X":
            if is_dir or current & 0o111:
                out |= 0o1 << shift
        elif perm == "s":
            out |= {"u": 0o4000, "g": 0o2000}.get(w, 0)
        elif perm == "t":
            out |= 0o1000 if w == "o" else 0
        elif perm in "ugo":
            out |= ((current >> shifts[perm]) & 0o7) << shift
    return out
