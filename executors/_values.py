"""``@value``: a frozen value class for the modules the zygote loads, without ``dataclasses``.

The zygote (``python -I -S _zygote.py``) starts at every build with a RUN step,
and the first step waits for it.  ``dataclasses`` would bring ``inspect``,
``ast``, ``dis``, ``tokenize`` and ``re`` along: about 10 ms of that start
(and of its CPU), for five small records.  ``pybuild._frozen`` imports
``typing`` and ``dataclasses`` itself, so it is no help here.

A ``@value`` class has the fields its annotations list (its own, in order; no
base class fields), each with the class attribute of the same name as its
default; ``__init__`` takes them by position or keyword; instances compare,
hash and print by their fields, as a frozen dataclass's, and refuse
assignment.  Nothing else of dataclasses (``fields``, ``replace``) applies.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the zygote does not import typing
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")

    @dataclass_transform(frozen_default=True)
    def value(cls: type[T]) -> type[T]:
        return cls

else:

    def value(cls):
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
        _install(cls, names, defaults)
        return cls


def _install(cls: Any, names: tuple[str, ...], defaults: dict[str, object]) -> None:
    title = cls.__qualname__

    def __init__(self: Any, *args: object, **kwargs: object) -> None:
        if len(args) > len(names):
            raise TypeError(f"{title}() takes {len(names)} arguments but {len(args)} were given")
        given = dict(zip(names, args))
        for name, item in kwargs.items():
            if name not in names or name in given:
                raise TypeError(f"{title}() got an unexpected or repeated argument {name!r}")
            given[name] = item
        for name in names:
            if name not in given and name not in defaults:
                raise TypeError(f"{title}() missing argument {name!r}")
            object.__setattr__(self, name, given[name] if name in given else defaults[name])

    def __setattr__(self: Any, name: str, item: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self: Any, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in names)

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, name) for name in names))

    def __repr__(self: Any) -> str:
        return f"{title}({', '.join(f'{name}={getattr(self, name)!r}' for name in names)})"

    for method in (__init__, __setattr__, __delattr__, __eq__, __hash__, __repr__):
        setattr(cls, method.__name__, method)
