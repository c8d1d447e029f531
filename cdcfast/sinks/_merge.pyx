# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Rows planned straight from their event, compiled (:func:`cdcfast.sinks.merge.plan`): which
events write a new row the model need not see (:func:`simple_event`), and that row as the model
would show and store it (:func:`new_row`). About half of a batch's row events go this way.
``tests/sinks/test_merge.py`` compares such rows with the model's."""

from cdcfast.events import CLEAR, INSERT, SET, UPDATE
from cdcfast.sinks.rowstore import encode_new_row
from cdcfast.sinks.state import NEVER, VisibleRow

cdef object NO_SHADOW = -(2**63)  # cdcfast.sinks.merge.NO_SHADOW


def simple_event(event, simple, complex_columns=frozenset()):
    """An INSERT or UPDATE of live values of simple columns, each once, and of elements of
    collection or UDT columns (``complex_columns``), each once, maybe after a clear of the column
    (once), without deletions or tombstones."""
    if event.op not in (INSERT, UPDATE) or event.deletion_ts is not None:
        return False
    if not event.cells:
        return event.liveness_ts is not None and event.liveness_ts > NO_SHADOW
    cdef set seen = set()  # columns, and (column, path) of elements
    for cell in event.cells:
        kind, path, column = cell.kind, cell.path, cell.column
        if path is None:
            if kind == SET:
                if column not in simple or cell.value is None or cell.ts <= NO_SHADOW:
                    return False
            elif kind != CLEAR or column not in complex_columns:
                return False
            if column in seen:
                return False
            seen.add(column)
        else:
            if kind != SET or column not in complex_columns or cell.value is None:
                return False
            element = (column, path)
            if element in seen:
                return False
            seen.add(element)
    return event.liveness_ts is None or event.liveness_ts > NO_SHADOW


def new_row(pk, key, event, static):
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
    if event.liveness_ts is not None:
        expires_at = event.liveness_expires_at if event.liveness_ttl else NEVER
        liveness = (event.liveness_ts, b"", expires_at)
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
    for cell in event.cells:
        column, value, expires_at = cell.column, cell.value, cell.expires_at
        if cell.path is not None:
            found = elements.get(column)
            if found is None:
                found = elements[column] = []
            found.append((cell.path, (cell.ts, value, expires_at)))
        elif cell.kind == CLEAR:
            clears[column] = cell.ts
        else:
            shows = True
            cells[column] = (cell.ts, value, expires_at)
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
        soonest = min((version[2] for _, version in written if version[2]), default=NEVER)
        if soonest:
            expires[column] = soonest
            if soonest > latest:
                latest = soonest
        else:
            forever = True
    if not shows:
        return None
    row = VisibleRow(pk, tuple(event.clustering), values, expires, NEVER if forever else latest)
    return key, row, encode_new_row(liveness, cells, clears, elements)
