"""The compiled loops read struct fields from their slots (cdcfast/_slots.pxd) only for objects of
exactly the struct's type; anything else (a subclass, a look-alike) is read by name, with the same
outcome."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec

from cdcfast.events import CLEAR, SET, TOMBSTONE, Cell
from cdcfast.sinks._state import apply_cells
from cdcfast.sinks.state import RowState, Version


class NamedCell(Cell, array_like=True, frozen=True, gc=False):
    """A subclass with a field of its own (read by name: only Cell itself is read from its slots)."""

    note: str = "subclass"


CELLS = [
    Cell("a", SET, 10, b"one"),
    Cell("a", SET, 9, b"older"),  # loses to ts 10
    Cell("b", TOMBSTONE, 11),
    Cell("l", SET, 12, b"x", path=b"\x01", ttl=60, expires_at=1_900_000_000),
    Cell("l", CLEAR, 13),
]


def folded(cells: list) -> RowState:
    row = RowState()
    apply_cells(row, cells, RowState._apply_counter)
    return row


def test_cells_of_another_type_fold_like_cells() -> None:
    want = RowState(
        cells={"a": Version(10, b"one"), "b": Version(11, None)},
        clears={"l": 13},
        elements={"l": {b"\x01": Version(12, b"x", 1_900_000_000)}},
    )
    assert folded(CELLS) == want
    assert folded([NamedCell(*msgspec.structs.astuple(c)) for c in CELLS]) == want
    assert folded([SimpleNamespace(**msgspec.structs.asdict(c)) for c in CELLS]) == want
