"""``pybuild._frozen.frozen`` behaves as ``@dataclass(frozen=True)``: each check runs the
same class body through both and compares what a caller can see."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from collections.abc import Callable
from dataclasses import FrozenInstanceError, InitVar, dataclass, field
from typing import Any, ClassVar

import pytest

from pybuild._frozen import frozen

Decorator = Callable[[type[Any]], type[Any]]
BOTH: list[tuple[str, Callable[..., Decorator]]] = [
    ("stdlib", lambda **kw: dataclass(frozen=True, **kw)),
    ("frozen", lambda **kw: frozen(**kw)),
]


def both(**options: bool) -> list[type[Any]]:
    return [make(**options) for _, make in BOTH]


def point(decorate: Decorator) -> type[Any]:
    @decorate
    class Point:
        """A point."""

        x: int
        y: str = "y"
        tags: tuple[str, ...] = field(default_factory=tuple)
        note: str = field(default="", compare=False, repr=False)
        extra: list[int] = field(default_factory=list, hash=False)

    return Point


@pytest.mark.parametrize("slots", [False, True])
def test_construction_equality_hash_and_repr_match_the_standard_library(slots: bool) -> None:
    stdlib, ours = (point(d) for d in both(slots=slots))
    for args, kwargs in [((1,), {}), ((1, "a", ("t",)), {"note": "n"}), ((2,), {"extra": [3]})]:
        a, b = stdlib(*args, **kwargs), ours(*args, **kwargs)
        assert repr(a) == repr(b)
        assert dataclasses.astuple(a) == dataclasses.astuple(b)
        assert hash(a) == hash(b) if not a.extra else True
        assert (a == stdlib(*args, **kwargs)) is (b == ours(*args, **kwargs)) is True
    assert ours(1, note="a") == ours(1, note="b")  # compare=False
    assert ours(1) != ours(2)
    assert hash(ours(1, extra=[1])) == hash(ours(1, extra=[2]))  # hash=False, list unhashable otherwise
    assert ours(1).__eq__(stdlib(1)) is NotImplemented
    assert str(inspect.signature(ours)) == str(inspect.signature(stdlib))


@pytest.mark.parametrize("slots", [False, True])
def test_assignment_and_deletion_are_refused_as_the_standard_library_refuses_them(slots: bool) -> None:
    for decorate in both(slots=slots):
        p = point(decorate)(1)
        with pytest.raises(FrozenInstanceError, match="cannot assign to field 'x'"):
            p.x = 2
        with pytest.raises(FrozenInstanceError, match="cannot delete field 'x'"):
            del p.x
        with pytest.raises((FrozenInstanceError, TypeError)):  # TypeError: Python 3.11's slots bug
            p.other = 1
        assert p.x == 1


def test_fields_replace_asdict_and_params_are_a_real_dataclass() -> None:
    stdlib, ours = (point(d) for d in both())
    assert [(f.name, f.compare, f.hash, f.repr) for f in dataclasses.fields(ours)] == [(f.name, f.compare, f.hash, f.repr) for f in dataclasses.fields(stdlib)]
    b = dataclasses.replace(ours(1), y="z")
    assert (b.x, b.y) == (1, "z")
    assert dataclasses.asdict(b) == dataclasses.asdict(dataclasses.replace(stdlib(1), y="z"))
    assert ours.__dataclass_params__.frozen and ours.__dataclass_params__.eq
    assert ours.__match_args__ == stdlib.__match_args__ == ("x", "y", "tags", "note", "extra")
    assert ours(1).tags is ours(2).tags  # () is one object: the factory ran
    assert ours(1).extra is not ours(1).extra  # a fresh list each time


@pytest.mark.parametrize("slots", [False, True])
def test_kw_only_defaults_init_false_and_post_init(slots: bool) -> None:
    seen: list[tuple[str, Any]] = []
    results = []
    for decorate in both(slots=slots, kw_only=True):

        @decorate
        class Step:
            name: str
            count: int = 0
            hidden: str = field(default="h", init=False)
            made: list[str] = field(default_factory=list, init=False)
            unit: ClassVar[str] = "s"

            def __post_init__(self) -> None:
                seen.append((type(self).__qualname__, self.name))

        with pytest.raises(TypeError):
            Step("positional")  # kw_only
        s = Step(name="a", count=2)
        results.append((repr(s), s.hidden, s.made, Step.unit))
        with pytest.raises(TypeError):
            Step(name="a", hidden="x")
    assert results[0] == results[1]
    assert [name for _, name in seen] == ["a", "a"]


def test_methods_the_class_defines_are_kept() -> None:
    @frozen
    class Custom:
        value: int

        def __repr__(self) -> str:
            return "custom"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Custom)

        def __hash__(self) -> int:
            return 7

    assert repr(Custom(1)) == "custom" and Custom(1) == Custom(2) and hash(Custom(3)) == 7

    @frozen
    class EqOnly:
        value: int

        def __eq__(self, other: object) -> bool:
            return True

    assert hash(EqOnly(1)) == hash((1,))  # as the standard library: eq defined, hash still added

    with pytest.raises(TypeError, match="__setattr__"):

        @frozen
        class Writable:
            value: int

            def __setattr__(self, name: str, value: object) -> None:
                pass


def test_subclasses_and_inheritance_follow_the_standard_library() -> None:
    @frozen
    class Base:
        a: int
        b: int = 2

    @frozen
    class Child(Base):
        c: int = 3

    @dataclass(frozen=True)
    class StdlibChild(Base):
        d: int = 4

    @frozen(slots=True)
    class SlotsChild(Child):
        e: int = 5

    assert repr(Child(1)) == "test_subclasses_and_inheritance_follow_the_standard_library.<locals>.Child(a=1, b=2, c=3)"
    assert [f.name for f in dataclasses.fields(SlotsChild)] == ["a", "b", "c", "e"]
    assert SlotsChild(1, e=6) == SlotsChild(1, 2, 3, 6) != SlotsChild(1)
    assert StdlibChild(1).d == 4 and Child(1) != Base(1)
    assert Base.__dataclass_params__.frozen and Child.__dataclass_params__.frozen
    with pytest.raises(FrozenInstanceError):
        SlotsChild(1).a = 2
    with pytest.raises(TypeError, match="non-frozen"):

        @dataclass
        class Thawed(Base):
            d: int = 4

    @dataclass
    class Mutable:
        m: int = 0

    with pytest.raises(TypeError, match="non-frozen"):

        @frozen
        class FrozenOverMutable(Mutable):
            n: int = 1

    class Plain(Base):  # not a dataclass: may set attributes that are not fields, as stdlib allows
        pass

    p = Plain(1)
    p.note = "x"  # type: ignore[attr-defined]  # the point of the check
    with pytest.raises(FrozenInstanceError):
        p.a = 5


def test_a_field_without_a_default_after_one_with_is_a_type_error() -> None:
    for decorate in both():
        with pytest.raises(TypeError):

            @decorate
            class Bad:
                a: int = 1
                b: int  # type: ignore[misc]  # the error under test


def test_a_class_without_a_docstring_is_documented_as_the_standard_library_does_it() -> None:
    made = []
    for decorate in both(slots=True):

        @decorate
        class Bare:
            a: int
            b: str = "x"

        made.append(Bare.__doc__)
    assert made[0] == made[1] == "Bare(a: 'int', b: 'str' = 'x')"
    assert point(frozen).__doc__ == "A point."


def test_init_vars_go_to_the_standard_library() -> None:
    @frozen
    class WithInitVar:
        a: int
        scale: InitVar[int] = 1

        def __post_init__(self, scale: int) -> None:
            object.__setattr__(self, "a", self.a * scale)

    assert WithInitVar(2, 3).a == 6


@pytest.mark.parametrize("slots", [False, True])
def test_copy_and_pickle_round_trip(slots: bool) -> None:
    cls = point(frozen(slots=slots))
    cls.__qualname__ = cls.__name__
    globals()[cls.__qualname__] = cls  # pickle finds classes by module and name
    try:
        p = cls(1, "a", ("t",), note="n", extra=[1])
        for clone in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
            assert clone == p and clone.note == "n" and clone.extra == [1]
    finally:
        del globals()[cls.__qualname__]


def test_recursive_repr_does_not_loop() -> None:
    @frozen
    class Box:
        items: list[Any]

    box = Box([])
    box.items.append(box)
    assert repr(box).endswith("Box(items=[...])")
