# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Merge planning's per-event loops, compiled (:func:`cdcfast.sinks.merge.plan`):

* each event's partition key, its bytes and its row's stored identity, made once per batch
  (:func:`batch_keys`; the writers lock, load and plan with them);
* which events write a new row the model need not see (:func:`simple_event`), and that row as the
  model would show and store it (:func:`new_row`), for a whole batch (:func:`new_rows`). About a
  third of a batch's events go this way.

``tests/sinks/test_merge.py`` compares the keys with :func:`cdcfast.sinks.merge.row_key` and
:func:`cdcfast.sinks.merge.partition_key_bytes`, and the planned rows with the model's."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy

from cdcfast._slots cimport Field, field_of, read

import msgspec

from cdcfast.events import CLEAR, INSERT, PARTITION_DELETE, RANGE_DELETE, SET, UPDATE, Cell, ChangeEvent
from cdcfast.sinks._state import apply_row_event, row_fields, visible_row
from cdcfast.sinks.rowstore import encode_fields, EMPTY_FIELD
from cdcfast.sinks.state import NEVER, VisibleRow

cdef object NO_SHADOW = -(2**63)  # cdcfast.sinks.merge.NO_SHADOW
cdef object encode_key = msgspec.msgpack.Encoder().encode  # the keys' encoder (cdcfast.sinks.merge)
cdef object MISSING = object()

# Struct fields read in the loops below (cdcfast._slots)
cdef Field CELL_COLUMN = field_of(Cell, "column")
cdef Field CELL_EXPIRES_AT = field_of(Cell, "expires_at")
cdef Field CELL_KIND = field_of(Cell, "kind")
cdef Field CELL_PATH = field_of(Cell, "path")
cdef Field CELL_TS = field_of(Cell, "ts")
cdef Field CELL_VALUE = field_of(Cell, "value")
cdef Field EVENT_CELLS = field_of(ChangeEvent, "cells")
cdef Field EVENT_CLUSTERING = field_of(ChangeEvent, "clustering")
cdef Field EVENT_DELETION_TS = field_of(ChangeEvent, "deletion_ts")
cdef Field EVENT_LIVENESS_EXPIRES_AT = field_of(ChangeEvent, "liveness_expires_at")
cdef Field EVENT_LIVENESS_TS = field_of(ChangeEvent, "liveness_ts")
cdef Field EVENT_LIVENESS_TTL = field_of(ChangeEvent, "liveness_ttl")
cdef Field EVENT_OP = field_of(ChangeEvent, "op")
cdef Field EVENT_PARTITION_KEY = field_of(ChangeEvent, "partition_key")
cdef Field EVENT_STATIC = field_of(ChangeEvent, "static")


# -- keys -----------------------------------------------------------------------------------------
# A key is msgpack of a list of bytes and nils, as msgspec writes it: an array header (fixarray up
# to 15 items, else array16 / array32), each value a bin8 / bin16 / bin32 or nil. Written here
# without the encoder's call; anything but bytes and None goes through the encoder.

cdef Py_ssize_t packed_size(object values) except -2:
    """The msgpack size of ``values`` (a list or tuple of bytes and None), or -1 if it holds anything else."""
    cdef Py_ssize_t n = len(values), size, i, length
    size = 1 if n <= 15 else 3 if n <= 0xFFFF else 5
    for i in range(n):
        value = values[i]
        if value is None:
            size += 1
        elif type(value) is bytes:
            length = PyBytes_GET_SIZE(value)
            size += length + (2 if length <= 0xFF else 3 if length <= 0xFFFF else 5)
        else:
            return -1
    return size


cdef inline char* put_length(char* p, uint32_t n, int size) noexcept:
    cdef int i
    for i in range(size):
        p[i] = <char>((n >> (8 * (size - 1 - i))) & 0xFF)
    return p + size


cdef char* pack(char* p, object values) noexcept:
    """Writes ``values`` (checked by :func:`packed_size`) at ``p``; gives the end."""
    cdef Py_ssize_t n = len(values), i, length
    if n <= 15:
        p[0] = <char>(0x90 | n)
        p += 1
    elif n <= 0xFFFF:
        p[0] = <char>0xDC
        p = put_length(p + 1, <uint32_t>n, 2)
    else:
        p[0] = <char>0xDD
        p = put_length(p + 1, <uint32_t>n, 4)
    for i in range(n):
        value = values[i]
        if value is None:
            p[0] = <char>0xC0
            p += 1
            continue
        length = PyBytes_GET_SIZE(value)
        if length <= 0xFF:
            p[0] = <char>0xC4
            p = put_length(p + 1, <uint32_t>length, 1)
        elif length <= 0xFFFF:
            p[0] = <char>0xC5
            p = put_length(p + 1, <uint32_t>length, 2)
        else:
            p[0] = <char>0xC6
            p = put_length(p + 1, <uint32_t>length, 4)
        memcpy(p, PyBytes_AS_STRING(value), length)
        p += length
    return p


cdef bytes partition_bytes(tuple pk):
    """``partition_key_bytes(pk)``."""
    cdef Py_ssize_t size = packed_size(pk)
    if size < 0:
        return encode_key(list(pk))
    out = PyBytes_FromStringAndSize(NULL, size)
    pack(PyBytes_AS_STRING(out), pk)
    return out


cdef bytes event_row_key(bytes pk_bytes, object clustering):
    """``row_key(pk, clustering)`` from the partition key's bytes: msgpack's pair of the two (a
    static-only row's clustering None: nil)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(pk_bytes)
    cdef Py_ssize_t size
    cdef char* p
    if clustering is None:
        return b"\x92" + pk_bytes + b"\xc0"
    size = packed_size(clustering)
    if size < 0:
        return b"\x92" + pk_bytes + encode_key(clustering)
    out = PyBytes_FromStringAndSize(NULL, 1 + n + size)
    p = PyBytes_AS_STRING(out)
    p[0] = <char>0x92
    memcpy(p + 1, PyBytes_AS_STRING(pk_bytes), n)
    pack(p + 1 + n, clustering)
    return out


cdef class BatchKeys:
    """One batch's keys (:func:`batch_keys`)."""

    cdef readonly list pks  # per event: its partition key (one tuple per partition, shared)
    cdef readonly list keys  # per event: its row's stored identity (row_key); None for a partition-level event
    cdef readonly dict pk_bytes  # partition key -> partition_key_bytes, in the order first met
    cdef readonly dict partitions  # partition_key_bytes -> partition key (pk_bytes the other way)
    cdef readonly dict partition_level  # partitions with a deletion, range deletion or static change (values None)
    cdef readonly dict counts  # row key -> the batch's events of that row

    def scope(self, bint whole_partitions):
        """:func:`cdcfast.sinks.merge.scope`'s answer: (partition keys to load whole, row keys to
        load): every partition when ``whole_partitions`` (a table with static columns), else those
        with a partition-level event; the rows of the other events, each once, in event order."""
        whole = self.pk_bytes if whole_partitions else self.partition_level
        cdef dict rows = {}
        cdef Py_ssize_t i
        cdef list pks = self.pks, keys = self.keys
        for i in range(len(pks)):
            if pks[i] not in whole:
                rows[keys[i]] = None
        return list(whole), list(rows)


def batch_keys(list events):
    """Each event's partition key, the partitions' key bytes (``partition_key_bytes``) and each row
    event's row key (``row_key``: also what counts its events), each encoded once per batch. An
    event is partition-level (no row key) when it deletes the partition or a range of it, or changes
    its static row."""
    cdef BatchKeys out = BatchKeys.__new__(BatchKeys)
    cdef list pks = [], keys = []
    cdef dict pk_bytes = {}, partitions = {}, partition_level = {}, counts = {}
    cdef dict canonical = {}  # partition key -> its first tuple
    for event in events:
        pk = tuple(read(event, EVENT_PARTITION_KEY))
        known = canonical.get(pk)
        if known is None:
            canonical[pk] = pk
            encoded = pk_bytes[pk] = partition_bytes(pk)
            partitions[encoded] = pk
        else:
            pk = known
        pks.append(pk)
        op = read(event, EVENT_OP)
        if op == PARTITION_DELETE or op == RANGE_DELETE or read(event, EVENT_STATIC):
            partition_level[pk] = None
            keys.append(None)
            continue
        key = event_row_key(<bytes>pk_bytes[pk], read(event, EVENT_CLUSTERING))
        keys.append(key)
        counts[key] = counts.get(key, 0) + 1
    out.pks, out.keys, out.pk_bytes, out.partitions = pks, keys, pk_bytes, partitions
    out.partition_level, out.counts = partition_level, counts
    return out


# -- rows planned straight from their event -------------------------------------------------------
def new_rows(
    list events, BatchKeys keys, dict stored, simple, complex_columns, fresh_view, dict plans, dict views, plan_type
):
    """``plan``'s fast path over a batch: each event that writes a new row by itself (the only event
    of its row, :func:`simple_event`, in a partition without a partition-level event in the batch,
    the row not stored yet) in a partition whose stored state has no deletion is planned by
    :func:`new_row` into ``plans`` (partition key -> ``plan_type(pk, pk_bytes, None, [], [], [])``).
    ``fresh_view(known)`` gives a stored partition's static view, None if it has deletions; one call
    per distinct stored state, noted per partition in ``views``. Gives back the other events as
    (event, partition key, row key or None) for the model."""
    cdef list slow = []
    cdef list pks = keys.pks, row_keys = keys.keys
    cdef dict counts = keys.counts, partition_level = keys.partition_level, pk_bytes = keys.pk_bytes
    cdef dict blob_views = {}  # a stored partition state's blob (b"" for none) -> its view
    cdef Py_ssize_t i
    for i in range(len(events)):
        event, pk, key = events[i], pks[i], row_keys[i]
        if (
            key is not None
            and pk not in partition_level
            and <Py_ssize_t>counts[key] == 1
            and simple_event(event, simple, complex_columns)
        ):
            known = stored.get(pk)
            view = views.get(pk, MISSING)
            if view is MISSING:
                blob = (known.state or b"") if known is not None else b""
                view = blob_views.get(blob, MISSING)
                if view is MISSING:
                    view = blob_views[blob] = fresh_view(known)
                views[pk] = view
            if view is not None and (known is None or key not in known.rows):
                planned = new_row(pk, key, event, view)
                if planned is not None:
                    p = plans.get(pk)
                    if p is None:
                        p = plans[pk] = plan_type(pk, pk_bytes[pk], None, [], [], [])
                    p.visible.append(planned)
                    continue
        slow.append((event, pk, key))
    return slow


def apply_events(list slow, model, load, dict touched, row_type, counter):
    """``plan``'s model work over a batch's other events ((event, partition key, row key) from
    :func:`new_rows`): ``load(pk)`` puts a partition into ``model.partitions`` before its first
    event; a row event is folded into its row (``TableState.apply``'s own steps: the row made with
    ``row_type()`` if new, then ``apply_row_event(row, event, counter)``), a partition-level one
    goes to ``model.apply``. ``touched``: partition key -> {clustering: row key} of the rows the
    events touch (every partition an event touches has one)."""
    cdef dict partitions = model.partitions
    cdef dict rows
    for event, pk, key in slow:
        partition = partitions.get(pk)
        if partition is None:
            load(pk)
            partition = partitions[pk]
        found = touched.get(pk)
        if found is None:
            found = touched[pk] = {}
        rows = found
        if key is None:
            model.apply(event)
            continue
        clustering = tuple(read(event, EVENT_CLUSTERING))
        row = partition.rows.get(clustering)
        if row is None:
            row = partition.rows[clustering] = row_type()
        apply_row_event(row, event, counter)
        rows[clustering] = key


def plan_partitions(
    model, dict stored, dict pk_bytes, dict touched, set kept, dict blobs_of, dict plans, plan_type,
    encode_partition, bytes empty_partition,
):
    """``plan``'s output for the partitions the model holds (``touched``: partition key ->
    {clustering: row key} of the rows its events touch), into ``plans``: the partition's new state
    when it changed (not for those in ``kept``: its stored state stays right), and the rows whose
    stored form changes: every row of a partition whose state changed, else the touched ones,
    minus those stored as they come out (same state, same visibility, not stale). A row the batch
    leaves alone keeps its stored blob (``blobs_of``: partition key -> {clustering: blob}). Gives
    back each partition's static view."""
    cdef dict statics = {}
    cdef dict partitions = model.partitions
    cdef dict touched_rows, rows, blobs, known_rows
    cdef list visible, tombstones
    cdef bint changed
    static_view = model.static_view
    for pk, found in touched.items():
        touched_rows = found
        merged = partitions[pk]
        known = stored.get(pk)
        known_rows = known.rows if known is not None else {}
        known_stale = known.stale if known is not None else None
        if pk in kept:
            changed, blob = False, None
        else:
            blob = encode_partition(merged)
            changed = blob != (known.state if known is not None and known.state else empty_partition)
        static = statics[pk] = static_view(merged)
        pkb = pk_bytes[pk]
        p = plans.get(pk)
        if p is None:
            p = plans[pk] = plan_type(pk, pkb, None, [], [], [])
        p.state = blob if changed else None
        blobs = blobs_of.get(pk) or {}
        visible, tombstones = p.visible, p.tombstones
        rows = merged.rows
        for clustering in (rows if changed else touched_rows):
            row = rows[clustering]
            key = touched_rows.get(clustering)
            if key is None:  # a stored row the batch leaves alone (its partition's state changed)
                key = event_row_key(pkb, clustering)
                row_blob = blobs[clustering]
            else:
                row_blob = encode_fields(row_fields(row))  # rowstore.encode_row, without its call
            shown = visible_row(model, pk, merged, clustering, row, static, None)
            if not changed and (known_stale is None or key not in known_stale):
                if known_rows.get(key) == (row_blob, shown is not None):
                    continue  # stored as it is
            if shown is not None:
                visible.append((key, shown, row_blob))
            else:
                tombstones.append((key, row_blob))
    return statics


cpdef bint simple_event(event, simple, complex_columns=frozenset()):
    """An INSERT or UPDATE of live values of simple columns, each once, and of elements of
    collection or UDT columns (``complex_columns``), each once, maybe after a clear of the column
    (once), without deletions or tombstones."""
    if read(event, EVENT_OP) not in (INSERT, UPDATE) or read(event, EVENT_DELETION_TS) is not None:
        return False
    liveness_ts = read(event, EVENT_LIVENESS_TS)
    cells = read(event, EVENT_CELLS)
    if not cells:
        return liveness_ts is not None and liveness_ts > NO_SHADOW
    cdef set seen = set()  # columns, and (column, path) of elements
    for cell in cells:
        kind, path, column = read(cell, CELL_KIND), read(cell, CELL_PATH), read(cell, CELL_COLUMN)
        if path is None:
            if kind == SET:
                if column not in simple or read(cell, CELL_VALUE) is None or read(cell, CELL_TS) <= NO_SHADOW:
                    return False
            elif kind != CLEAR or column not in complex_columns:
                return False
            if column in seen:
                return False
            seen.add(column)
        else:
            if kind != SET or column not in complex_columns or read(cell, CELL_VALUE) is None:
                return False
            element = (column, path)
            if element in seen:
                return False
            seen.add(element)
    return liveness_ts is None or liveness_ts > NO_SHADOW


cpdef object new_row(pk, key, event, static):
    """What :meth:`TableState.visible_row` and :func:`encode_row` give for a new row written by one
    simple event (:func:`simple_event`) in a partition without deletions: every written value shows, and
    each collection element written after its column's clear (if any), next to the partition's static
    values. None when the row does not show (only elements hidden by their clear). The row's versions
    are plain ``(ts, value, expires_at)`` tuples (what a :class:`Version` encodes as): nothing but the
    encoder reads them."""
    cdef bint forever = False  # something keeps the row for good (row_expires NEVER)
    cdef bint shows
    liveness = None
    latest = NEVER  # else the latest expiry among what keeps it
    liveness_ts = read(event, EVENT_LIVENESS_TS)
    if liveness_ts is not None:
        expires_at = read(event, EVENT_LIVENESS_EXPIRES_AT) if read(event, EVENT_LIVENESS_TTL) else NEVER
        liveness = (liveness_ts, b"", expires_at)
        if expires_at == NEVER:
            forever = True
        elif expires_at > latest:
            latest = expires_at
    cdef dict cells = {}
    cdef dict clears = {}
    cdef dict elements = {}
    static_values, static_expires, _ = static
    values = dict(static_values) if static_values else {}
    expires = dict(static_expires) if static_expires else {}
    shows = liveness is not None
    for cell in read(event, EVENT_CELLS):
        column, value, expires_at = read(cell, CELL_COLUMN), read(cell, CELL_VALUE), read(cell, CELL_EXPIRES_AT)
        path, ts = read(cell, CELL_PATH), read(cell, CELL_TS)
        if path is not None:
            found = elements.get(column)
            if found is None:
                found = elements[column] = []
            found.append((path, (ts, value, expires_at)))
        elif read(cell, CELL_KIND) == CLEAR:
            clears[column] = ts
        else:
            shows = True
            cells[column] = (ts, value, expires_at)
            values[column] = value
            if expires_at:
                expires[column] = expires_at
                if expires_at > latest:
                    latest = expires_at
            else:
                forever = True
    for column, written in elements.items():
        # TableState._raw_values: the elements above the column's clear show; the column's expiry
        # is the soonest among all its elements (shown or not)
        clear = clears.get(column)
        floor = NO_SHADOW if clear is None or clear < NO_SHADOW else clear
        shown = [(path, version[1]) for path, version in written if version[0] > floor]
        if not shown:
            continue
        shows = True
        values[column] = shown
        soonest = NEVER
        for _, version in written:
            if version[2] and (soonest == NEVER or version[2] < soonest):
                soonest = version[2]
        if soonest:
            expires[column] = soonest
            if soonest > latest:
                latest = soonest
        else:
            forever = True
    if not shows:
        return None
    row = VisibleRow(pk, tuple(read(event, EVENT_CLUSTERING)), values, expires, NEVER if forever else latest)
    # rowstore.encode_new_row's bytes, without its call
    return key, row, encode_fields((liveness, None, cells, clears or EMPTY_FIELD, elements or EMPTY_FIELD, EMPTY_FIELD, EMPTY_FIELD))
