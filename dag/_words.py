"""Go's way of printing values, where image history text depends on it."""

from __future__ import annotations

from collections.abc import Sequence

from pybuild.grammar import go_quote

__all__ = ["duration_string", "go_list", "go_quote", "go_quote_rune", "go_quoted_list", "port_specs"]


def go_list(items: Sequence[str]) -> str:
    """fmt's %v of a []string: ``[a b c]``."""
    return "[" + " ".join(items) + "]"


def go_quoted_list(items: Sequence[str]) -> str:
    """fmt's %q of a []string: ``["a" "b c"]``."""
    return "[" + " ".join(go_quote(item) for item in items) + "]"


def _fraction(value: int, digits: int) -> str:
    whole, rest = divmod(value, 10**digits)
    text = str(whole)
    if rest:
        text += "." + f"{rest:0{digits}d}".rstrip("0")
    return text


def duration_string(nanoseconds: int) -> str:
    """time.Duration.String(): ``0s``, ``300ms``, ``1.5s``, ``1m30s``, ``1h0m0s``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fraction(ns, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_fraction(ns, 6)}ms"
    seconds_ns = ns % 60_000_000_000
    minutes_total = ns // 60_000_000_000
    hours, minutes = divmod(minutes_total, 60)
    text = _fraction(seconds_ns, 9) + "s"
    if minutes_total:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


_PROTOCOLS = ("tcp", "udp", "sctp")


def port_specs(words: Sequence[str]) -> list[str]:
    """EXPOSE words -> ``port/proto`` keys, ranges expanded (docker's nat.ParsePortSpecs)."""
    out: list[str] = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in _PROTOCOLS:
            raise ValueError(f"invalid proto: {proto}")
        if ":" in port:
            port = port.rsplit(":", 1)[1]
        start_text, dash, end_text = port.partition("-")
        try:
            start = int(start_text)
            end = int(end_text) if dash else start
        except ValueError:
            raise ValueError(f"invalid containerPort: {port}") from None
        if not (0 <= start <= 65535 and 0 <= end <= 65535) or end < start:
            raise ValueError(f"invalid containerPort: {port}")
        out.extend(f"{p}/{proto}" for p in range(start, end + 1))
    return out


def go_quote_rune(value: int) -> str:
    """fmt's %q of an integer: a Go character literal such as ``'\\x03'`` or ``'A'``."""
    if value == ord("'"):
        return "'\\''"
    quoted = go_quote(chr(value))[1:-1]
    return f"'{quoted.replace(chr(92) + chr(34), chr(34))}'"
