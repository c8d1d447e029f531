# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The state model's hottest loops, compiled: an event's cells folded into a row state
(:meth:`cdcfast.sinks.state.RowState.apply`), a row's winning values
(:meth:`cdcfast.sinks.state.TableState._raw_values`) and a row state's stored fields
(:func:`row_fields`, for :func:`cdcfast.sinks.rowstore.encode_row`).

Every writer runs them for each event of a batch and each row it writes (about a seventh of a
writer's CPU as Python). They do exactly what the Python did, on the same objects: the model's
dataclasses and :class:`~cdcfast.sinks.state.Version` structs. ``tests/sinks/test_state_model.py``
and ``tests/sinks/test_merge.py`` check the model against Cassandra's corpora.
"""

from cdcfast._slots cimport Field, field_of, read

from cdcfast.events import Cell, ChangeEvent

# Struct fields read in the loops below (cdcfast._slots)
cdef Field EVENT_LIVENESS_TS = field_of(ChangeEvent, "liveness_ts")
cdef Field EVENT_LIVENESS_TTL = field_of(ChangeEvent, "liveness_ttl")
cdef Field EVENT_LIVENESS_EXPIRES_AT = field_of(ChangeEvent, "liveness_expires_at")
cdef Field EVENT_DELETION_TS = field_of(ChangeEvent, "deletion_ts")
cdef Field EVENT_OP = field_of(ChangeEvent, "op")
cdef Field EVENT_CELLS = field_of(ChangeEvent, "cells")
cdef Field CELL_COLUMN = field_of(Cell, "column")
cdef Field CELL_KIND = field_of(Cell, "kind")
cdef Field CELL_TS = field_of(Cell, "ts")
cdef Field CELL_VALUE = field_of(Cell, "value")
cdef Field CELL_PATH = field_of(Cell, "path")
cdef Field CELL_EXPIRES_AT = field_of(Cell, "expires_at")
cdef Field VERSION_TS, VERSION_VALUE, VERSION_EXPIRES_AT  # set by bind()

# cdcfast.sinks.state's classes (bound by state.py, which imports this module)
cdef object Version = None
cdef object VisibleRow = None
cdef object NO_SHADOW = -(2**63)

cdef enum:
    # cdcfast.events cell kinds
    TOMBSTONE = 1
    CLEAR = 2
    COUNTER = 3
    # cdcfast.sinks.state column kinds (_value_kind)
    SIMPLE_COLUMN = 0
    COMPLEX_COLUMN = 1


def bind(version_type, visible_row_type):
    """Give the module the structs it builds (state.py, once they are defined)."""
    global Version, VisibleRow, VERSION_TS, VERSION_VALUE, VERSION_EXPIRES_AT
    Version = version_type
    VisibleRow = visible_row_type
    VERSION_TS = field_of(version_type, "ts")
    VERSION_VALUE = field_of(version_type, "value")
    VERSION_EXPIRES_AT = field_of(version_type, "expires_at")


def apply_row_event(row, event, counter):
    """``RowState.apply``: a row event's liveness, row deletion and cells folded into ``row``."""
    liveness_ts = read(event, EVENT_LIVENESS_TS)
    if liveness_ts is not None:
        expires_at = read(event, EVENT_LIVENESS_EXPIRES_AT) if read(event, EVENT_LIVENESS_TTL) else 0
        version = Version(liveness_ts, b"", expires_at)
        current = row.liveness
        if current is None or version.beats(current):
            row.liveness = version
    deletion_ts = read(event, EVENT_DELETION_TS)
    if deletion_ts is not None and read(event, EVENT_OP) not in ("partition_delete", "range_delete"):
        current = row.deletion_ts
        if current is None or current < deletion_ts:
            row.deletion_ts = deletion_ts
    cells = read(event, EVENT_CELLS)
    if cells:
        apply_cells(row, cells, counter)


def visible_row(model, pk, partition, clustering, row, static, now):
    """``TableState.visible_row``: one row as ``SELECT *`` shows it, or None when it is not visible.
    A partition with range deletions has the row's shadow found by ``model._row_shadow``."""
    if partition.ranges:
        shadow = model._row_shadow(partition, clustering, row)
    else:
        shadow = partition.deletion_ts or NO_SHADOW  # (a partition deletion at 0 shadows nothing)
        deletion_ts = row.deletion_ts
        if deletion_ts is not None and deletion_ts > shadow:
            shadow = deletion_ts
    values, expires, live = raw_values(row, model._regular_kinds, shadow, now)
    liveness = row.liveness
    cdef bint marker = (
        liveness is not None
        and liveness.ts > shadow
        and liveness.value is not None
        and (liveness.expires_at == 0 or now is None or now < liveness.expires_at)
    )
    if not (live or marker):
        return None
    # What keeps the row: its live values (an expiring one until its expiry, which ``expires``
    # holds, never NEVER; any other for good) and its live marker.
    if live > len(expires) or (marker and liveness.expires_at == 0):
        row_expires = 0
    else:
        row_expires = max(expires.values(), default=0)
        if marker and liveness.expires_at > row_expires:
            row_expires = liveness.expires_at
    static_values, static_expires, _ = static
    if static_values:
        values = {**static_values, **values}
    if static_expires:
        expires = {**static_expires, **expires}
    return VisibleRow(pk, clustering, values, expires, row_expires)


def apply_cells(row, list cells, counter):
    """Fold one event's cells into ``row`` (a RowState): a written value or tombstone is kept when it
    beats the row's version of that cell or element (a newer timestamp wins outright, an older one
    loses; a tie goes to ``Version.beats``), a clear keeps the newest clear timestamp; a counter
    cell goes to ``counter(row, cell)``."""
    cdef dict row_cells = row.cells
    cdef dict elements = row.elements
    cdef dict versions
    cdef dict clears
    cdef int kind
    for cell in cells:
        kind = read(cell, CELL_KIND)
        if kind == CLEAR:
            clears = row.clears
            ts = read(cell, CELL_TS)
            column = read(cell, CELL_COLUMN)
            known = clears.get(column)
            clears[column] = ts if known is None or known < ts else known
            continue
        if kind == COUNTER:
            counter(row, cell)
            continue
        ts = read(cell, CELL_TS)
        path = read(cell, CELL_PATH)
        if path is None:
            versions = row_cells
            key = read(cell, CELL_COLUMN)
        else:
            column = read(cell, CELL_COLUMN)
            found = elements.get(column)
            if found is None:
                found = elements[column] = {}
            versions = found
            key = path
        current = versions.get(key)
        current_ts = None if current is None else read(current, VERSION_TS)
        if current is None or ts >= current_ts:
            version = Version(ts, None if kind == TOMBSTONE else read(cell, CELL_VALUE), read(cell, CELL_EXPIRES_AT))
            if current is None or ts > current_ts or version.beats(current):
                versions[key] = version


def raw_values(row, list columns, shadow, now):
    """``TableState._raw_values``: the winning values of ``columns`` ((name, kind) pairs) above
    ``shadow`` and live as of ``now`` (None: ignoring expiry), the expiry of each expiring one, and
    how many are live. A complex column's value is its live elements in stored order (None when
    none is), its expiry the soonest among all its stored elements; a counter's its total."""
    cdef dict values = {}
    cdef dict expires = {}
    cdef Py_ssize_t live = 0
    cdef dict cells = row.cells
    cdef dict elements = row.elements
    cdef dict clears = row.clears
    cdef dict column_elements
    cdef list shown
    cdef int kind
    cdef bint ignore_expiry = now is None
    for name, column_kind in columns:
        kind = column_kind
        if kind == SIMPLE_COLUMN:
            version = cells.get(name)
            if version is None:
                values[name] = None
                continue
            value = read(version, VERSION_VALUE)
            if value is None or read(version, VERSION_TS) <= shadow:
                values[name] = None
                continue
            expires_at = read(version, VERSION_EXPIRES_AT)
            if expires_at:
                if not ignore_expiry and now >= expires_at:
                    values[name] = None
                    continue
                expires[name] = expires_at
            values[name] = value
            live += 1
        elif kind == COMPLEX_COLUMN:
            found = elements.get(name)
            if not found:
                values[name] = None
                continue
            column_elements = found
            clear = clears.get(name)
            floor = shadow if clear is None or clear < shadow else clear
            shown = []
            soonest = None
            for path, version in column_elements.items():
                expires_at = read(version, VERSION_EXPIRES_AT)
                if expires_at and (soonest is None or expires_at < soonest):
                    soonest = expires_at
                value = read(version, VERSION_VALUE)
                if value is not None and read(version, VERSION_TS) > floor:
                    if not expires_at or ignore_expiry or now < expires_at:
                        shown.append((path, value))
            if shown:
                values[name] = shown
                live += 1
                if soonest is not None:
                    expires[name] = soonest
            else:
                values[name] = None
        else:
            total = values[name] = row.counter_total(name, shadow)
            if total is not None:
                live += 1
    return values, expires, live


cdef dict EMPTY_FIELD = {}  # an empty field of a stored row (cdcfast.sinks.rowstore)


def row_fields(row):
    """A row state's stored fields in ``cdcfast.sinks.rowstore._StoredRow``'s order, encoded as they
    are (the same msgpack array as the struct, without building it): collection elements as
    (path, version) lists, counters as (counter id, clock, count) lists, an empty one as ``{}``."""
    cdef dict elements = row.elements, counters = row.counters
    cdef dict element_lists, shard_lists
    if elements:
        element_lists = {column: list((<dict>versions).items()) for column, versions in elements.items()}
    else:
        element_lists = EMPTY_FIELD
    if counters:
        shard_lists = {
            column: [(counter_id, shard[0], shard[1]) for counter_id, shard in (<dict>shards).items()]
            for column, shards in counters.items()
        }
    else:
        shard_lists = EMPTY_FIELD
    return (row.liveness, row.deletion_ts, row.cells, row.clears, element_lists, shard_lists, row.counter_ts)
