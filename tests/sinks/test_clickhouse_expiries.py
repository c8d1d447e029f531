"""TTL in ClickHouse: each row stores the expiries of its expiring values only (a real 18.16 server).

A ClickHouse insert writes a few files per column of every part it makes, and that, not the rows,
is most of what a small write costs the server. So the state rows table keeps two arrays (the names
of the columns whose values expire, and when) instead of one expiry column per data column, and
the views hide a value once its expiry has passed. Tables made by an earlier cdcfast, with one
``_exp_<column>`` per data column, get the arrays when a writer starts, computed from the old
columns for the rows they hold.
"""

from __future__ import annotations

import re

import pytest
from support.clickhouse_tables import ThrowawayTables

from cdcfast.events import UPDATE, Cell, ChangeEvent
from cdcfast.sinks.clickhouse import ClickHouseSink

pytestmark = pytest.mark.services
TS = 1_700_000_000_000_000  # µs
EXPIRES = 1_750_000_000  # seconds (June 2025): a's value in row 1 expires then; b's never


def write(keyspace: str, seq: int, cells: list[Cell]) -> ChangeEvent:
    return ChangeEvent(
        b"", keyspace=keyspace, table="t", op=UPDATE, partition_key=[b"\0\0\0\1"],
        clustering=[seq.to_bytes(4, "big")], ts=TS, cells=cells,
    ).with_content_id()  # fmt: skip


EVENTS = [
    (1, [Cell("a", 0, TS, b"a1", ttl=100, expires_at=EXPIRES), Cell("b", 0, TS, b"b1")]),
    (2, [Cell("c", 0, TS, b"c2", ttl=100, expires_at=EXPIRES + 50)]),
]


class Table(ThrowawayTables):
    def __init__(self) -> None:
        super().__init__("ttl_")

    def apply(self, events: list[ChangeEvent]) -> ClickHouseSink:
        return self.write(events, "node1", (1, len(events)))

    def state(self, sink: ClickHouseSink, moment: int) -> list[tuple]:
        writer = sink.writers[(self.keyspace, "t")]
        return sorted(self.client.execute(writer.as_of_select(f"toDateTime({moment})")))

    def columns(self, relation: str) -> list[str]:
        return [name for name, *_ in self.client.execute(f"DESCRIBE TABLE `{self.keyspace}`.`{relation}`")]


def expect(table: Table, sink: ClickHouseSink) -> None:
    assert table.state(sink, EXPIRES - 1) == [(1, 1, "a1", "b1", None), (1, 2, None, None, "c2")]
    assert table.state(sink, EXPIRES) == [(1, 1, None, "b1", None), (1, 2, None, None, "c2")]
    # row 2's only value expired: the row no longer shows (it was made by an UPDATE, no row marker)
    assert table.state(sink, EXPIRES + 50) == [(1, 1, None, "b1", None)]
    current = table.client.execute(f"SELECT id, seq, a, b, c FROM `{table.keyspace}`.t ORDER BY seq")
    assert current == [(1, 1, None, "b1", None)]  # the view, now (long after both expiries)


def test_rows_keep_only_their_expiring_values_expiries_and_views_hide_them_once_passed() -> None:
    table = Table()
    sink = table.apply([write(table.keyspace, seq, cells) for seq, cells in EVENTS])
    assert not [c for c in table.columns("t__rows") if c.startswith("_exp_") and c not in ("_exp_names", "_exp_at")]
    stored = table.client.execute(f"SELECT _exp_names, _exp_at FROM `{table.keyspace}`.t__rows FINAL ORDER BY _key")
    assert stored == [(["a"], [EXPIRES]), (["c"], [EXPIRES + 50])]
    expect(table, sink)


def test_rows_of_a_table_made_with_an_expiry_column_per_value_keep_their_expiries() -> None:
    table = Table()
    sink = table.apply([])
    rows = f"`{table.keyspace}`.t__rows"
    made = table.client.execute(f"SHOW CREATE TABLE {rows}")[0][0]
    earlier = re.sub(
        r"_exp_names Array\(String\),\s*_exp_at Array\(UInt32\)", "_exp_a UInt32, _exp_b UInt32, _exp_c UInt32", made
    )
    assert earlier != made, made
    table.client.execute(f"DROP TABLE {rows}")
    table.client.execute(earlier)
    table.client.execute(
        f"INSERT INTO {rows} (id, seq, a, b, _exp_a, _key, _pk, _visible, _state, _version, _source) VALUES",
        [(1, 1, "a1", "b1", EXPIRES, "k1", "p", 1, "", 1, "node1")],
    )
    table.client.execute(f"DROP TABLE `{table.keyspace}`.t")  # a view of those days, which knew no arrays
    table.client.execute(f"CREATE VIEW `{table.keyspace}`.t AS SELECT id, seq, a, b, c FROM {rows} FINAL")
    sink = table.apply([])  # a writer starts: the table gets the arrays, the view is made again
    assert {"_exp_names", "_exp_at"} <= set(table.columns("t__rows"))
    stored = table.client.execute(f"SELECT _exp_names, _exp_at FROM {rows}")
    assert stored == [(["a"], [EXPIRES])]
    assert table.state(sink, EXPIRES - 1) == [(1, 1, "a1", "b1", None)]
    assert table.state(sink, EXPIRES) == [(1, 1, None, "b1", None)]
    assert table.client.execute(f"SELECT id, seq, a, b, c FROM `{table.keyspace}`.t") == [(1, 1, None, "b1", None)]
