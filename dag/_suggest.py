"""BuildKit's "did you mean" (moby/buildkit util/suggest): the closest name at
edit distance 1 or 2, used by the checks and by ``--from`` that names no stage."""

from __future__ import annotations

from collections.abc import Iterable


def suggestion(name: str, options: Iterable[str]) -> str | None:
    """BuildKit's suggest: the closest option at edit distance 1 or 2, none on an exact match."""
    best, best_distance = None, 3
    for option in sorted(set(options)):
        if option == name:
            return None
        distance = _levenshtein(name, option)
        if distance < best_distance:
            best, best_distance = option, distance
    return best


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]
