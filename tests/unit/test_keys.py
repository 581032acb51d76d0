"""`mapsync.keys`: the command-line form of a record key and back, and finding the stored keys a
list of written keys names (as the CLI, the dashboard and the daemon do for retry and resolve)."""

from __future__ import annotations

import pytest

from mapsync import keys


@pytest.mark.parametrize(
    ("key", "columns", "written"),
    [
        ((1001,), ["id"], "1001"),
        (("a,b=c\\",), ["code"], "a,b=c\\"),  # one column: the value as is
        (("code=x",), ["code"], "code=code\\=x"),  # a value that starts like `col=`
        ((7, 2), ["order_no", "line_no"], "order_no=7,line_no=2"),
        (("a,b", None), ["x", "y"], "x=a\\,b,y="),
    ],
)
def test_to_arg_and_parse_arg_round_trip(key: tuple[object, ...], columns: list[str], written: str) -> None:
    assert keys.to_arg(key, columns) == written
    parsed = keys.parse_arg(written, columns)
    assert parsed == tuple("" if v is None else str(v) for v in key)
    assert keys.matches(key, parsed)


def test_parse_arg_names_what_it_expects() -> None:
    with pytest.raises(ValueError, match="order_no=VALUE,line_no=VALUE"):
        keys.parse_arg("7", ["order_no", "line_no"])
    with pytest.raises(ValueError, match="missing line_no"):
        keys.parse_arg("order_no=7", ["order_no", "line_no"])


def test_find_names_each_stored_key_or_none_in_order() -> None:
    stored = [(1,), (2,), ("x y",), (None,)]
    wanted = [("2",), ("3",), ("x y",), ("",), ("1",)]
    assert keys.find(stored, wanted) == [(2,), None, ("x y",), (None,), (1,)]
    assert keys.find([], wanted) == [None] * 5


def test_find_many_compound_keys() -> None:
    stored = [(i, i % 7) for i in range(50_000)]
    wanted = [(str(i), str(i % 7)) for i in range(0, 50_000, 3)]
    found = keys.find(stored, wanted)
    assert found == [(i, i % 7) for i in range(0, 50_000, 3)]
