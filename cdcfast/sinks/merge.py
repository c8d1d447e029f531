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
from cdcfast.events import ChangeEvent
from cdcfast.sinks._merge import BatchKeys, apply_events, batch_keys, new_rows, plan_partitions
from cdcfast.sinks.rowstore import decode_partition, decode_row, encode_partition
from cdcfast.sinks.state import PartitionState, RowState, StaticView, TableState, VisibleRow

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


def scope(
    table: TableDef, events: list[ChangeEvent], keys: BatchKeys | None = None
) -> tuple[list[tuple[bytes, ...]], list[bytes]]:
    """Which stored state a batch needs: whole partitions (partition or range deletions, static
    changes, any change in a table with static columns, whose values show on every row), and
    single rows for the rest. Returns (partition keys to load whole, row keys to load).
    ``keys``: the batch's :func:`batch_keys`, if made already."""
    if keys is None:
        keys = batch_keys(events)
    return keys.scope(any(c.kind == "static" for c in table.columns.values()))


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
    table: TableDef,
    stored: dict[tuple[bytes, ...], StoredPartition],
    events: list[ChangeEvent],
    keys: BatchKeys | None = None,
) -> list[PartitionPlan]:
    """Apply ``events`` (all of ``table``) to the stored partitions they touch (``keys``: the
    batch's :func:`batch_keys`, if made already).

    Only rows whose stored form changes are planned: the rows the events touch (or every stored
    row of a partition whose own state changed: a deletion, a range deletion, a static value), minus
    those whose state and visibility come out as they were stored (a replay), plus the static-only
    row when it appears or goes.

    Three steps: new rows planned straight from their event (:func:`_plan_new_rows`), the other
    events applied to the stored state they need (:func:`_load_and_apply`), and each of their
    partitions' rows planned from the model (:func:`_plan_partitions`)."""
    if keys is None:
        keys = batch_keys(events)
    model = TableState(table)
    plans: dict[tuple[bytes, ...], PartitionPlan] = {}
    views: dict[tuple[bytes, ...], StaticView | None] = {}  # None: no new row goes straight there
    slow = _plan_new_rows(model, stored, events, keys, plans, views)
    loaded = _load_and_apply(model, stored, slow, keys)
    statics = _plan_partitions(model, stored, keys, loaded, plans)
    if model.static_columns:  # the static-only row shows while the partition has no visible row
        for pk, p in plans.items():
            view = statics.get(pk) or views.get(pk)
            _static_only_row(model, pk, p, stored.get(pk), model.partitions.get(pk), view, loaded.undecoded.get(pk))
    return list(plans.values())


def _plan_new_rows(
    model: TableState,
    stored: dict[tuple[bytes, ...], StoredPartition],
    events: list[ChangeEvent],
    keys: BatchKeys,
    plans: dict[tuple[bytes, ...], PartitionPlan],
    views: dict[tuple[bytes, ...], StaticView | None],
) -> list[tuple[ChangeEvent, tuple[bytes, ...], bytes | None]]:
    """The fast path: a new row written by a single event with simple cells only
    (:func:`_merge.simple_event`), in a partition without deletions and without a partition-level
    change in the batch, is planned straight from its event (:func:`_merge.new_row`): the model's
    answer for it, without the model's work. Compiled: :func:`_merge.new_rows`. Gives back the
    other events, each as (event, partition key, row key or None), for the model."""
    simple = {c.name for c in model.regular if not c.type.is_complex and not c.type.is_counter}
    complex_columns = frozenset(c.name for c in model.regular if c.type.is_complex and not c.type.is_counter)

    def fresh_view(known: StoredPartition | None) -> StaticView | None:
        # The view of a stored partition state without deletions (most partitions share one).
        state = _stored_state(known)
        return model.static_view(state) if state.deletion_ts is None and not state.ranges else None

    return new_rows(events, keys, stored, simple, complex_columns, fresh_view, plans, views, PartitionPlan)


@dataclass
class _Loaded:
    """What :func:`_load_and_apply` found of the stored state, for :func:`_plan_partitions`."""

    kept: set[tuple[bytes, ...]]  # partitions whose stored state stays right
    undecoded: dict[tuple[bytes, ...], dict[bytes, bytes]]  # stored rows left undecoded: row key -> blob
    blobs: dict[tuple[bytes, ...], dict[tuple, bytes]]  # decoded stored rows: clustering -> blob
    touched: dict[tuple[bytes, ...], dict[tuple, bytes]]  # rows the events touch: clustering -> row key


def _load_and_apply(
    model: TableState,
    stored: dict[tuple[bytes, ...], StoredPartition],
    slow: list[tuple[ChangeEvent, tuple[bytes, ...], bytes | None]],
    keys: BatchKeys,
) -> _Loaded:
    """The model's part: each slow event's partition loaded into the model from its stored state
    and rows, then the event applied (the loop compiled: :func:`_merge.apply_events`). In a
    partition whose own state the batch leaves alone, only the stored rows its slow events touch
    are decoded; the others keep their stored form (decoded only if the static-only row's fate
    needs them, see :func:`_static_only_row`)."""
    wanted: dict[tuple[bytes, ...], set[bytes]] = {}
    for _, pk, key in slow:
        if key is not None:
            wanted.setdefault(pk, set()).add(key)
    partition_level = keys.partition_level
    # Whether a stored partition state's blob is what encode_partition gives for it (by blob): then
    # a partition without a partition-level event keeps it, unwritten (most partitions share one).
    canonical: dict[bytes, bool] = {}
    loaded = _Loaded(set(), {}, {}, {})
    kept = loaded.kept
    partitions = model.partitions

    def load(pk: tuple[bytes, ...]) -> None:
        # A partition's first slow event: its stored state and rows into the model.
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
            blobs = loaded.blobs[pk] = {}
            rest = _load_rows(merged, known, wanted.get(pk) if pk in kept else None, blobs)
            if rest:
                loaded.undecoded[pk] = rest

    apply_events(slow, model, load, loaded.touched, RowState, RowState._apply_counter)
    return loaded


def _plan_partitions(
    model: TableState,
    stored: dict[tuple[bytes, ...], StoredPartition],
    keys: BatchKeys,
    loaded: _Loaded,
    plans: dict[tuple[bytes, ...], PartitionPlan],
) -> dict[tuple[bytes, ...], StaticView]:
    """Each partition the model holds, planned into ``plans``: its new state when it changed, and
    the rows whose stored form changes (every row of a partition whose state changed, else the
    rows the events touched). Gives back each partition's static view. Compiled:
    :func:`_merge.plan_partitions`."""
    return plan_partitions(
        model,
        stored,
        keys.pk_bytes,
        loaded.touched,
        loaded.kept,
        loaded.blobs,
        plans,
        PartitionPlan,
        encode_partition,
        EMPTY_PARTITION,
    )


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
    stored_row = (known.rows if known is not None else {}).get(key)
    was_shown = stored_row is not None and stored_row[1]
    if placeholder is not None and (p.state is not None or not was_shown):
        p.visible.append((key, placeholder, b""))
    elif placeholder is None and (was_shown or (stored_row is not None and p.state is not None)):
        # Gone, or stored as gone (a sink keeping invisible rows: ClickHouse) and written again with
        # the new partition state, like every other row of the partition: made from the state stored.
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
