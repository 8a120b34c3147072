"""``executors._values.value``: the frozen records of the modules the zygote loads behave as
frozen dataclasses do where pybuild uses them."""

from __future__ import annotations

import dataclasses

import pytest

from pybuild.executors._values import value


@value
class Point:
    x: int
    y: int = 7
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Twin:
    x: int
    y: int = 7
    label: str = ""


def test_fields_by_position_keyword_and_default() -> None:
    assert (Point(1).x, Point(1).y, Point(1).label) == (1, 7, "")
    assert (Point(1, 2, "a").y, Point(x=3, label="b").label) == (2, "b")


def test_equality_hash_and_repr_as_a_frozen_dataclass() -> None:
    assert Point(1, 2) == Point(x=1, y=2) and Point(1, 2) != Point(1, 3)
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Point(1) != Twin(1)  # another class, even with the same fields
    assert repr(Point(1, 2, "a")).replace("Point", "Twin") == repr(Twin(1, 2, "a"))


def test_assignment_is_refused() -> None:
    point = Point(1)
    with pytest.raises(AttributeError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y  # type: ignore[misc]
    assert point.x == 1


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2, "a", "extra"), {}), ((1,), {"x": 2}), ((1,), {"z": 2})],
)
def test_wrong_arguments_are_refused(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Point(*args, **kwargs)  # type: ignore[arg-type, call-arg, misc]
