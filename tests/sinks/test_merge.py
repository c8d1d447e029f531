"""Merge planning without a database: a sink kept in memory, written only what :func:`plan` says,
ends with the reconciliation model's own rows; replays plan nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from conftest import Corpus
from support.replay import cdc_events

from cdcfast.commitlog.schema import TableDef
from cdcfast.events import ChangeEvent
from cdcfast.sinks.merge import PartitionPlan, StoredPartition, partition_key_bytes, plan, row_key, scope
from cdcfast.sinks.state import TableState, VisibleRow


@dataclass
class MemorySink:
    """What a sink stores for one table: partition states and rows (state, visible, shown values)."""

    table: TableDef
    partitions: dict[bytes, bytes] = field(default_factory=dict)
    rows: dict[bytes, tuple[bytes, tuple[bytes, ...], bool, VisibleRow | None]] = field(default_factory=dict)

    def apply(self, events: list[ChangeEvent]) -> list[PartitionPlan]:
        pks = list(dict.fromkeys(tuple(e.partition_key) for e in events))
        stored = {pk: StoredPartition(self.partitions.get(partition_key_bytes(pk))) for pk in pks}
        whole, row_keys = scope(self.table, events)
        wanted_partitions = {partition_key_bytes(pk) for pk in whole}
        wanted_rows = set(row_keys)
        by_bytes = {partition_key_bytes(pk): pk for pk in pks}
        for key, (blob, pk_bytes, shown, _) in self.rows.items():
            if pk_bytes in wanted_partitions or key in wanted_rows:
                stored[by_bytes[pk_bytes]].rows[key] = (blob, shown)
        plans = plan(self.table, stored, events)
        for p in plans:
            if p.state is not None:
                self.partitions[p.pk_bytes] = p.state
            for key, row, blob in p.visible:
                self.rows[key] = (blob, p.pk_bytes, True, row)
            for key, blob in p.tombstones:
                self.rows[key] = (blob, p.pk_bytes, False, None)
            for key in p.gone:
                assert self.rows[key][2], "only a shown row can go"
                del self.rows[key]
        return plans


def shown(row: VisibleRow) -> tuple:
    return (
        row.partition_key,
        row.clustering,
        {k: v for k, v in row.values.items() if v is not None},
        row.expires,
        row.row_expires,
    )


def test_planned_rows_equal_the_model_and_replays_plan_nothing(corpus: Corpus) -> None:
    schema, events = cdc_events(corpus)
    for table in schema.cdc_tables():
        mine = [e for e in events if (e.keyspace, e.table) == (table.keyspace, table.name)]
        sink = MemorySink(table)
        for start in range(0, len(mine), 997):
            sink.apply(mine[start : start + 997])
        model = TableState(table)
        model.apply_all(mine)
        want = {row_key(pk, r.clustering): shown(r) for pk in model.partitions for r in model.visible_rows(pk)}
        got = {key: shown(row) for key, (_, _, visible, row) in sink.rows.items() if visible and row is not None}
        assert got.keys() == want.keys(), table.qualified_name
        assert got == want, table.qualified_name
        for start in range(0, min(len(mine), 6000), 1500):  # the same changes again, from another replica
            for p in sink.apply(mine[start : start + 1500]):
                assert (p.state, p.visible, p.tombstones, p.gone) == (None, [], [], []), table.qualified_name


def test_uuid_sort_keys_read_from_the_bytes_equal_the_uuid_module() -> None:
    import os
    import struct
    import uuid

    from cdcfast.sinks.state import _uuid_key

    def reference(raw: bytes, time_based_only: bool) -> tuple:
        value = uuid.UUID(bytes=raw)
        if value.version == 1:
            return (1, value.time, raw[8:]) if not time_based_only else (value.time, struct.unpack(">q", raw[8:])[0])
        return (value.version or 0, raw)

    samples = [uuid.uuid1().bytes, uuid.uuid4().bytes, bytes(16), b"\xff" * 16]
    for _ in range(2000):
        raw = bytearray(os.urandom(16))
        raw[6] = (raw[6] & 0x0F) | (0x10 if len(samples) % 2 else raw[6] & 0xF0)
        samples.append(bytes(raw))
    for raw in samples:
        for time_based_only in (True, False):
            assert _uuid_key(raw, time_based_only) == reference(raw, time_based_only), raw.hex()
