"""``@frozen``: ``@dataclass(frozen=True)`` built at about a quarter of the cost.

A frozen dataclass costs about a millisecond to define: the standard library
writes the source of six methods (``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__``, ``__delattr__``) and compiles each with
``exec``.  With ~140 of them loaded by every build, that was a third of
pybuild's start-up after the interpreter's own.  Here the standard library
still reads the fields (``dataclasses.fields``, ``replace``, ``asdict`` and
cache keys see a real dataclass), one ``__init__`` is compiled per class, and
the other five methods are closures over the field names: no compiling.

The result behaves as ``@dataclass(frozen=True[, slots=..., kw_only=...])``:
the same ``__init__`` signature (defaults, ``field(default_factory=...)``,
``init=False`` fields, ``__post_init__``), equality and hash over the fields
that compare, the same ``repr``, ``FrozenInstanceError`` on assignment, and a
method the class defines itself is kept.  A class with ``InitVar`` fields goes
to the standard library as it is.  Like ``errors`` and ``_lazy``, this module
sits beside the layers and imports nothing from them.
"""

import dataclasses
import inspect
import operator
import reprlib
from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

class _Factory:
    """The default of a parameter whose field has a default_factory (shown as the standard library's)."""

    def __repr__(self) -> str:
        return "<factory>"


_HAS_FACTORY = _Factory()
_RESERVED = "_frozen_"  # prefix of the generated __init__'s own names


@overload
def frozen(cls: type[T], /) -> type[T]: ...


@overload
def frozen(*, slots: bool = False, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def frozen(cls: type[T] | None = None, /, *, slots: bool = False, kw_only: bool = False) -> Any:
    """``@dataclass(frozen=True)``, also as ``@frozen(slots=True, kw_only=True)``."""

    def wrap(cls: type[T]) -> type[T]:
        return _make(cls, slots=slots, kw_only=kw_only)

    return wrap if cls is None else wrap(cls)


def _make(cls: type[T], *, slots: bool, kw_only: bool) -> type[T]:
    if _has_init_vars(cls):
        return dataclasses.dataclass(frozen=True, slots=slots, kw_only=kw_only)(cls)
    own = dict(cls.__dict__)
    if "__setattr__" in own or "__delattr__" in own:
        raise TypeError(f"cannot overwrite __setattr__/__delattr__ of frozen {cls.__name__}")
    bases = [vars(base)["__dataclass_params__"] for base in cls.__mro__[1:] if "__dataclass_params__" in vars(base)]
    if not all(base.frozen for base in bases):
        raise TypeError("cannot inherit frozen dataclass from a non-frozen one")
    # The fields, the class attributes of their defaults, __match_args__, slots:
    # everything the standard library does without writing a method.  It refuses a
    # non-frozen dataclass over frozen bases, which is what it is asked to make here,
    # so the bases say non-frozen while it reads them.
    for base in bases:
        base.frozen = False
    documented = bool(cls.__doc__)
    if not documented:
        cls.__doc__ = "-"  # else it would make one from the signature of object.__init__ (slow, and not ours)
    try:
        cls = dataclasses.dataclass(init=False, repr=False, eq=False, frozen=False, slots=slots, kw_only=kw_only)(cls)
    finally:
        for base in bases:
            base.frozen = True
    params = cls.__dataclass_params__  # type: ignore[attr-defined]  # set just above
    params.init = params.repr = params.eq = params.frozen = True  # what it now is: subclasses check .frozen
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # cls is a dataclass now
    if "__init__" not in own:
        _set(cls, "__init__", _init(cls, fields, slots))
    if "__repr__" not in own:
        _set(cls, "__repr__", _repr(tuple(f.name for f in fields if f.repr)))
    compared = _getter(tuple(f.name for f in fields if f.compare))
    if "__eq__" not in own:
        _set(cls, "__eq__", _eq(compared))
    explicit_hash = own.get("__hash__", MISSING)
    if explicit_hash is MISSING or (explicit_hash is None and "__eq__" in own):  # None: Python's, for a class defining __eq__
        hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        _set(cls, "__hash__", _hash(_getter(hashed)))
    setattr_, delattr_ = _frozen_setattr(cls, frozenset(f.name for f in fields))
    _set(cls, "__setattr__", setattr_)
    _set(cls, "__delattr__", delattr_)
    if slots:
        _set(cls, "__getstate__", _getstate)
        _set(cls, "__setstate__", _setstate)
    if not documented:  # the standard library's: the class's name and signature
        cls.__doc__ = cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
    return cls


def _has_init_vars(cls: type) -> bool:
    """InitVar pseudo-fields in the class or a base: left to the standard library."""
    annotations = [a for klass in cls.__mro__ for a in vars(klass).get("__annotations__", {}).values()]
    return any(isinstance(a, dataclasses.InitVar) or a is dataclasses.InitVar or "InitVar" in str(a) for a in annotations)


def _set(cls: type, name: str, function: Any) -> None:
    function.__qualname__ = f"{cls.__qualname__}.{name}"
    setattr(cls, name, function)


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...], slots: bool) -> Callable[..., None]:
    """The standard library's frozen ``__init__``, compiled from the same kind of source."""
    names: dict[str, Any] = {f"{_RESERVED}setattr": object.__setattr__, f"{_RESERVED}factory": _HAS_FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.name.startswith(_RESERVED):
            raise TypeError(f"{cls.__name__}: field name {f.name!r} is reserved by @frozen")
        default = f"{_RESERVED}default_{f.name}"
        value: str | None = f.name
        if f.default_factory is not MISSING:
            names[default] = f.default_factory
            value = f"{default}() if {f.name} is {_RESERVED}factory else {f.name}" if f.init else f"{default}()"
            parameter = f"{f.name}={_RESERVED}factory"
        elif f.default is not MISSING:
            names[default] = f.default
            parameter = f"{f.name}={default}"
            if not f.init:
                value = default if slots else None  # without slots the class attribute is the value
        else:
            parameter = f.name
            if not f.init:
                value = None
        if f.init:
            (keyword if f.kw_only else positional).append(parameter)
        if value is not None:
            body.append(f"  {_RESERVED}setattr(self, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({signature}):\n" + ("\n".join(body) or "  pass") + "\n"
    try:
        code = compile(source, f"<@frozen {cls.__qualname__}>", "exec")
    except SyntaxError as error:  # a field without a default after one with a default
        raise TypeError(f"{cls.__name__}: {error.msg}") from None
    namespace: dict[str, Any] = {}
    exec(code, names, namespace)  # noqa: S102  # our own source, built from field names above
    init: Callable[..., None] = namespace["__init__"]
    init.__annotations__ = {**{f.name: f.type for f in fields if f.init}, "return": None}  # as inspect shows them
    return init


def _getter(names: tuple[str, ...]) -> Callable[[object], tuple[Any, ...]]:
    """The tuple of those fields' values, as the standard library compares and hashes them."""

    if len(names) >= 2:
        values: Callable[[object], tuple[Any, ...]] = operator.attrgetter(*names)
        return values
    if names:
        one = operator.attrgetter(names[0])
        return lambda self: (one(self),)
    return lambda self: ()


def _repr(names: tuple[str, ...]) -> Callable[[object], str]:
    @reprlib.recursive_repr()
    def __repr__(self: object) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__qualname__}({fields})"

    return __repr__


def _eq(values: Callable[[object], tuple[Any, ...]]) -> Callable[[object, object], Any]:
    def __eq__(self: object, other: object) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _hash(values: Callable[[object], tuple[Any, ...]]) -> Callable[[object], int]:
    def __hash__(self: object) -> int:
        return hash(values(self))

    return __hash__


def _frozen_setattr(owner: type, names: frozenset[str]) -> tuple[Callable[[object, str, Any], None], Callable[[object, str], None]]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is owner or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(owner, self).__setattr__(name, value)  # type: ignore[arg-type]  # mypy wants a class literal here

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is owner or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(owner, self).__delattr__(name)  # type: ignore[arg-type]  # mypy wants a class literal here

    return __setattr__, __delattr__


def _getstate(self: object) -> list[Any]:
    return [getattr(self, f.name) for f in dataclasses.fields(self)]  # type: ignore[arg-type]  # a dataclass


def _setstate(self: object, state: list[Any]) -> None:
    for f, value in zip(dataclasses.fields(self), state, strict=True):  # type: ignore[arg-type]  # a dataclass
        object.__setattr__(self, f.name, value)
