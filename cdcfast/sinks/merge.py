"""Merge planning shared by every writer: stored partition states + events -> rows to write.

A writer loads the stored state a batch touches (see :func:`scope`: each partition's own state, and
either all its rows and row tombstones or just the rows the batch changes), applies the batch with
:class:`TableState`, and writes back what it loaded: visible rows into the current-state table,
invisible rows' states into the tombstone table (so that late events with older timestamps still
lose), partition states beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from cdcfast.commitlog.schema import TableDef
from cdcfast.events import PARTITION_DELETE, RANGE_DELETE, ChangeEvent
from cdcfast.sinks._merge import new_row as _new_row
from cdcfast.sinks._merge import simple_event as _simple
from cdcfast.sinks.rowstore import decode_partition, decode_row, encode_partition, encode_row
from cdcfast.sinks.state import PartitionState, StaticView, TableState, VisibleRow

NO_SHADOW = -(2**63)  # the shadow of a row without deletions: only a timestamp above it shows

_key_encoder = msgspec.msgpack.Encoder()
_key_decoder = msgspec.msgpack.Decoder(tuple[list[bytes], list[bytes | None] | None])


def partition_key_bytes(pk: Iterable[bytes]) -> bytes:
    return _key_encoder.encode(list(pk))


def row_key(pk: Iterable[bytes], clustering: Iterable[bytes | None] | None) -> bytes:
    """The stored identity of a row; ``clustering`` None is a static-only partition's row."""
    return _key_encoder.encode((list(pk), None if clustering is None else list(clustering)))


_PAIR = b"\x92"  # msgpack: an array of two (row_key's (partition key, clustering))
_NIL = b"\xc0"  # msgpack: nil (a static-only row's clustering)
_encode_key = _key_encoder.encode


def _row_key_from(pk_bytes: bytes, clustering: list[bytes | None] | tuple[bytes | None, ...] | None) -> bytes:
    """:func:`row_key` from the partition key's encoding (:func:`partition_key_bytes`), the same
    bytes: a batch encodes each partition key once, not once per row (msgpack writes a list and a
    tuple alike)."""
    return _PAIR + pk_bytes + (_NIL if clustering is None else _encode_key(clustering))


def split_row_key(key: bytes) -> tuple[tuple[bytes, ...], tuple[bytes | None, ...] | None]:
    pk, clustering = _key_decoder.decode(key)
    return tuple(pk), None if clustering is None else tuple(clustering)


def by_table(events: Iterable[ChangeEvent]) -> dict[tuple[str, str], list[ChangeEvent]]:
    """Events grouped by (keyspace, table), each group in commit log order."""
    groups: dict[tuple[str, str], list[ChangeEvent]] = {}
    for event in events:
        groups.setdefault((event.keyspace, event.table), []).append(event)
    return groups


def scope(table: TableDef, events: list[ChangeEvent]) -> tuple[list[tuple[bytes, ...]], list[bytes]]:
    """Which stored state a batch needs: whole partitions (partition or range deletions, static
    changes, any change in a table with static columns, whose values show on every row), and
    single rows for the rest. Returns (partition keys to load whole, row keys to load)."""
    has_static = any(c.kind == "static" for c in table.columns.values())
    whole: dict[tuple[bytes, ...], None] = {}
    for event in events:
        if has_static or event.static or event.op in (PARTITION_DELETE, RANGE_DELETE):
            whole[tuple(event.partition_key)] = None
    rows = {
        row_key(event.partition_key, event.clustering): None
        for event in events
        if tuple(event.partition_key) not in whole
    }
    return list(whole), list(rows)


@dataclass
class StoredPartition:
    """What a sink holds for one partition: its state blob, and for each stored row (by row key) its
    state blob and whether it is stored as a visible row (False: as an invisible one, a tombstone).
    A static-only row has an empty blob."""

    state: bytes | None
    rows: dict[bytes, tuple[bytes, bool]] = field(default_factory=dict)
    # Rows whose stored form is not what ``state`` and ``rows`` give: a sink keeping several writers'
    # versions of a row found the winning one behind the others (cdcfast.sinks.clickhouse_versions).
    stale: set[bytes] = field(default_factory=set)


@dataclass
class PartitionPlan:
    """What to write for one partition; rows whose stored form stays right are not in it."""

    pk: tuple[bytes, ...]
    pk_bytes: bytes
    state: bytes | None  # the new partition state, None when the stored one is still right
    visible: list[tuple[bytes, VisibleRow, bytes]]  # (row key, row, row state) to store as visible
    tombstones: list[tuple[bytes, bytes]]  # (row key, row state) to store as invisible
    gone: list[bytes]  # visible rows that are no row any more (a static-only row once a row shows)


EMPTY_PARTITION = encode_partition(PartitionState())


def plan(
    table: TableDef, stored: dict[tuple[bytes, ...], StoredPartition], events: list[ChangeEvent]
) -> list[PartitionPlan]:
    """Apply ``events`` (all of ``table``) to the stored partitions they touch.

    Only rows whose stored form changes are planned: the rows the events touch (or every stored
    row of a partition whose own state changed: a deletion, a range deletion, a static value), minus
    those whose state and visibility come out as they were stored (a replay), plus the static-only
    row when it appears or goes.

    A new row written by a single event with simple cells only (:func:`_simple`), in a partition
    without deletions and without a partition-level change in the batch, is planned straight from
    its event (:func:`_new_row`): the model's answer for it, without the model's work."""
    model = TableState(table)
    simple = {c.name for c in model.regular if not c.type.is_complex and not c.type.is_counter}
    complex_columns = frozenset(c.name for c in model.regular if c.type.is_complex and not c.type.is_counter)
    # Each partition key is encoded once; each row event's key (its row's stored identity, also what
    # counts its events) is built from it.
    pk_bytes: dict[tuple[bytes, ...], bytes] = {}
    partition_level: set[tuple[bytes, ...]] = set()
    counts: dict[bytes, int] = {}
    pks: list[tuple[bytes, ...]] = []
    keys: list[bytes | None] = []  # None: a partition-level event
    for event in events:
        pk = tuple(event.partition_key)
        pkb = pk_bytes.get(pk)
        if pkb is None:
            pkb = pk_bytes[pk] = partition_key_bytes(pk)
        pks.append(pk)
        if event.op in (PARTITION_DELETE, RANGE_DELETE) or event.static:
            partition_level.add(pk)
            keys.append(None)
        else:
            event_key = _row_key_from(pkb, event.clustering)
            counts[event_key] = counts.get(event_key, 0) + 1
            keys.append(event_key)

    plans: dict[tuple[bytes, ...], PartitionPlan] = {}
    views: dict[tuple[bytes, ...], StaticView | None] = {}  # None: no new row goes straight there
    # The view of each stored partition state (by its blob; b"" for none): most partitions share
    # one, having no deletion and no static value. _new_row only reads views.
    blob_views: dict[bytes, StaticView | None] = {}
    slow: list[tuple[ChangeEvent, tuple[bytes, ...], bytes | None]] = []
    for event, pk, key in zip(events, pks, keys):
        if (
            key is not None
            and pk not in partition_level
            and counts[key] == 1
            and _simple(event, simple, complex_columns)
        ):
            known = stored.get(pk)
            if pk in views:
                view = views[pk]
            else:
                state_blob = known.state or b"" if known is not None else b""
                if state_blob in blob_views:
                    view = blob_views[state_blob]
                else:
                    state = _stored_state(known)
                    fresh = state.deletion_ts is None and not state.ranges
                    view = blob_views[state_blob] = model.static_view(state) if fresh else None
                views[pk] = view
            if view is not None and (known is None or key not in known.rows):
                planned = _new_row(pk, key, event, view)
                if planned is not None:
                    p = plans.get(pk)
                    if p is None:
                        p = plans[pk] = PartitionPlan(pk, pk_bytes[pk], None, [], [], [])
                    p.visible.append(planned)
                    continue
        slow.append((event, pk, key))

    # The stored rows each partition's slow events touch: in a partition whose own state the batch
    # leaves alone, the other stored rows keep their stored form (decoded only if the static-only
    # row's fate needs them, see _static_only_row).
    wanted: dict[tuple[bytes, ...], set[bytes]] = {}
    for _, pk, key in slow:
        if key is not None:
            wanted.setdefault(pk, set()).add(key)
    # Whether a stored partition state's blob is what encode_partition gives for it (by blob): then
    # a partition without a partition-level event keeps it, unwritten (most partitions share one).
    canonical: dict[bytes, bool] = {}
    undecoded: dict[tuple[bytes, ...], dict[bytes, bytes]] = {}  # row key -> stored state blob
    stored_blobs: dict[tuple[bytes, ...], dict[tuple, bytes]] = {}  # decoded row's clustering -> blob
    kept: set[tuple[bytes, ...]] = set()  # partitions whose stored state stays right
    touched: dict[tuple[bytes, ...], dict[tuple, bytes]] = {}  # row clustering -> row key
    partitions = model.partitions
    for event, pk, key in slow:
        if pk not in partitions:
            known = stored.get(pk)
            merged = partitions[pk] = _stored_state(known)
            known_state = known.state if known is not None else None
            if pk not in partition_level:
                if not known_state:
                    kept.add(pk)
                else:
                    same = canonical.get(known_state)
                    if same is None:
                        same = canonical[known_state] = encode_partition(merged) == known_state
                    if same:
                        kept.add(pk)
            if known is not None and known.rows:
                blobs = stored_blobs[pk] = {}
                rest = _load_rows(merged, known, wanted.get(pk) if pk in kept else None, blobs)
                if rest:
                    undecoded[pk] = rest
        model.apply(event)
        rows = touched.get(pk)
        if rows is None:
            rows = touched[pk] = {}
        if key is not None:
            rows[tuple(event.clustering)] = key

    statics: dict[tuple[bytes, ...], StaticView] = {}
    for pk, touched_rows in touched.items():
        merged = partitions[pk]
        known = stored.get(pk)
        known_rows = known.rows if known is not None else {}
        known_stale = known.stale if known is not None else set()
        if pk in kept:
            changed, blob = False, None
        else:
            blob = encode_partition(merged)
            changed = blob != (known.state if known is not None and known.state else EMPTY_PARTITION)
        static = statics[pk] = model.static_view(merged)
        pkb = pk_bytes[pk]
        p = plans.get(pk)
        if p is None:
            p = plans[pk] = PartitionPlan(pk, pkb, None, [], [], [])
        p.state = blob if changed else None
        blobs = stored_blobs.get(pk, {})
        for clustering in merged.rows if changed else touched_rows:
            row = merged.rows[clustering]
            key = touched_rows.get(clustering)
            if key is None:  # a stored row the batch leaves alone (its partition's state changed)
                key = _row_key_from(pkb, clustering)
                row_blob = blobs[clustering]
            else:
                row_blob = encode_row(row)
            shown = model.visible_row(pk, merged, clustering, row, static)
            if not changed and known_rows.get(key) == (row_blob, shown is not None) and key not in known_stale:
                continue  # stored as it is
            if shown is not None:
                p.visible.append((key, shown, row_blob))
            else:
                p.tombstones.append((key, row_blob))

    if model.static_columns:  # the static-only row shows while the partition has no visible row
        for pk, p in plans.items():
            view = statics.get(pk) or views.get(pk)
            _static_only_row(model, pk, p, stored.get(pk), partitions.get(pk), view, undecoded.get(pk))
    return list(plans.values())


def _static_only_row(
    model: TableState,
    pk: tuple[bytes, ...],
    p: PartitionPlan,
    known: StoredPartition | None,
    merged: PartitionState | None,
    static: StaticView | None = None,
    undecoded: dict[bytes, bytes] | None = None,
) -> None:
    """Add the partition's static-only row to ``p`` when it appears, or to ``p.gone`` when it goes.
    ``static``: the static view of ``merged`` if known; ``undecoded``: stored rows (row key -> state
    blob) not in ``merged.rows``, unchanged by the batch, decoded here only if needed."""
    merged = merged or _stored_state(known)
    if static is None:
        static = model.static_view(merged)
    placeholder = None
    if not any(row.clustering is not None for _, row, _ in p.visible):  # no row shows for sure yet
        invisible = {key for key, _ in p.tombstones}
        if not any(
            model.visible_row(pk, merged, ck, row, static) is not None
            for ck, row in merged.rows.items()
            if _row_key_from(p.pk_bytes, ck) not in invisible
        ) and not any(
            model.visible_row(pk, merged, ck, decode_row(blob), static) is not None
            for key, blob in (undecoded or {}).items()
            if key not in invisible
            for ck in (split_row_key(key)[1],)
            if ck is not None
        ):
            placeholder = model.static_only_row(pk, static)
    key = _row_key_from(p.pk_bytes, None)
    was_shown = (known.rows if known is not None else {}).get(key, (b"", False))[1]
    if placeholder is not None and (p.state is not None or not was_shown):
        p.visible.append((key, placeholder, b""))
    elif placeholder is None and was_shown:
        p.gone.append(key)


def _stored_partition(known: StoredPartition | None) -> PartitionState:
    """A stored partition's state with its stored rows (the static-only row aside)."""
    merged = _stored_state(known)
    if known is not None:
        _load_rows(merged, known, None, None)
    return merged


def _load_rows(
    merged: PartitionState,
    known: StoredPartition,
    wanted: set[bytes] | None,
    blobs: dict[tuple, bytes] | None,
) -> dict[bytes, bytes]:
    """Decode ``known``'s stored rows (those in ``wanted``, None: all) into ``merged.rows``, noting
    each one's blob by clustering in ``blobs``; gives back the rows left undecoded (key -> blob)."""
    rest: dict[bytes, bytes] = {}
    rows = merged.rows
    for key, (blob, _) in known.rows.items():
        if not blob:
            continue  # the static-only row
        if wanted is not None and key not in wanted:
            rest[key] = blob
            continue
        clustering = split_row_key(key)[1]
        if clustering is not None:
            rows[clustering] = decode_row(blob)
            if blobs is not None:
                blobs[clustering] = blob
    return rest


def _stored_state(known: StoredPartition | None) -> PartitionState:
    if known is None or not known.state or known.state == EMPTY_PARTITION:
        return PartitionState()  # (decode_partition's answer for the empty state, without decoding)
    return decode_partition(known.state)


def reevaluate(table: TableDef, stored: dict[tuple[bytes, ...], StoredPartition]) -> list[PartitionPlan]:
    """Stored visible rows judged again with ``table``, after a column was dropped in Cassandra: a row
    whose only live cells were in the dropped column is no row any more (``SELECT *`` skips it), so
    it is planned as a tombstone (its state kept: a later write merges with it). For a table with
    static columns ``stored`` must hold every visible row of each partition: the static-only row
    appears when none is left."""
    model = TableState(table)
    plans = []
    for pk, known in stored.items():
        merged = _stored_partition(known)
        static = model.static_view(merged)
        p = PartitionPlan(pk, partition_key_bytes(pk), None, [], [], [])
        for key, (blob, shown) in known.rows.items():
            _, clustering = split_row_key(key)
            if not shown or not blob or clustering is None:
                continue
            if model.visible_row(pk, merged, clustering, merged.rows[clustering], static) is None:
                p.tombstones.append((key, blob))
        if p.tombstones:
            if model.static_columns:
                _static_only_row(model, pk, p, known, merged)
            plans.append(p)
    return plans


def converge(table: TableDef, stored: dict[tuple[bytes, ...], StoredPartition]) -> list[PartitionPlan]:
    """The stale rows of ``stored`` (see :attr:`StoredPartition.stale`) planned again from the
    stored states: what to write so that every row's stored form is what the states give. The
    static-only row is judged again in every partition. ``stored`` holds whole partitions for a
    table with static columns (their rows decide whether the static-only row shows)."""
    model = TableState(table)
    plans = []
    for pk, known in stored.items():
        if not known.stale and not model.static_columns:
            continue  # nothing to judge again here
        merged = _stored_partition(known)
        static = model.static_view(merged)
        p = PartitionPlan(pk, partition_key_bytes(pk), None, [], [], [])
        for key in known.stale:
            _, clustering = split_row_key(key)
            if clustering is None:
                continue
            row = merged.rows[clustering]
            shown = model.visible_row(pk, merged, clustering, row, static)
            if shown is not None:
                p.visible.append((key, shown, known.rows[key][0]))
            else:
                p.tombstones.append((key, known.rows[key][0]))
        if model.static_columns:
            static_key = row_key(pk, None)
            was_shown = known.rows.get(static_key, (b"", False))[1]
            if static_key in known.stale and was_shown:  # its static values may be behind: shown again
                known = StoredPartition(known.state, {**known.rows, static_key: (b"", False)})
            _static_only_row(model, pk, p, known, merged)
        if p.visible or p.tombstones or p.gone:
            plans.append(p)
    return plans
