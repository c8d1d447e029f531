"""Batches as the corpora's ``reference-decoding.jsonl`` lines (Cassandra's own reader's view).

One JSON object per partition update; the field order and omissions follow
../shared/corpus/README.md so that the output can be compared line for line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cdcfast.commitlog.batch import (
    BOUND_KINDS,
    CELL_COMPLEX_DELETION,
    CELL_COUNTER,
    CELL_EXPIRING,
    CELL_HAS_PATH,
    CELL_TOMBSTONE,
    NO_DELETION,
    ROW_DELETED,
    ROW_EXPIRING,
    ROW_HAS_LIVENESS,
    ROW_SHADOWABLE,
    RT_BOUNDARY,
    STATIC_ROW,
    Batch,
)


def _deletion(ts: int, ldt: int) -> dict[str, int]:
    return {"ts": ts, "ldt": ldt}


def _clustering(batch: Batch, first: int, count: int) -> list[str | None]:
    return [None if v is None else v.hex() for v in batch.clustering(first, count)]


def _cells(batch: Batch, first: int, count: int, table_index: int) -> list[dict[str, Any]]:
    columns = batch.data_columns(table_index)
    arena = batch.arena
    out: list[dict[str, Any]] = []
    records = batch.cells[first : first + count].tolist()
    for _row, col, flags, ts, ttl, ldt, path_off, path_len, value_off, value_len in records:
        column = columns[col]
        if flags & CELL_COMPLEX_DELETION:
            out.append({"col": column.name, "complex_deletion": _deletion(ts, ldt)})
            continue
        cell: dict[str, Any] = {"col": column.name, "type": column.type_text}
        if flags & CELL_HAS_PATH:
            cell["path"] = [arena[path_off : path_off + path_len].hex()]
        cell["ts"] = ts
        if flags & CELL_EXPIRING:
            cell["ttl"] = ttl
        if flags & (CELL_EXPIRING | CELL_TOMBSTONE):
            cell["ldt"] = ldt
        if flags & CELL_TOMBSTONE:
            cell["tombstone"] = True
        if flags & CELL_COUNTER:
            cell["counter"] = True
        cell["value"] = arena[value_off : value_off + value_len].hex()
        out.append(cell)
    return out


def _row(batch: Batch, index: int, table_index: int) -> dict[str, Any]:
    r = batch.rows[index]
    kind = int(r["kind"])
    clustering = _clustering(batch, int(r["first_clustering"]), int(r["n_clustering"]))
    if kind >= 2:
        marker: dict[str, Any] = {
            "kind": "rt_boundary" if kind == RT_BOUNDARY else "rt_bound",
            "bound_kind": BOUND_KINDS[int(r["bound_kind"])],
            "clustering": clustering,
        }
        if kind == RT_BOUNDARY:
            marker["end_deletion"] = _deletion(int(r["del_ts"]), int(r["del_ldt"]))
            marker["start_deletion"] = _deletion(int(r["del2_ts"]), int(r["del2_ldt"]))
        else:
            marker["deletion"] = _deletion(int(r["del_ts"]), int(r["del_ldt"]))
        return marker
    flags = int(r["flags"])
    row: dict[str, Any] = {"kind": "row", "clustering": clustering if kind != STATIC_ROW else []}
    if flags & ROW_HAS_LIVENESS:
        liveness = {"ts": int(r["live_ts"]), "ttl": int(r["live_ttl"])}
        if flags & ROW_EXPIRING:
            liveness["ldt"] = int(r["live_ldt"])
        row["liveness"] = liveness
    if flags & ROW_DELETED:
        row["deletion"] = _deletion(int(r["del_ts"]), int(r["del_ldt"]))
        row["shadowable"] = bool(flags & ROW_SHADOWABLE)
    row["cells"] = _cells(batch, int(r["first_cell"]), int(r["n_cells"]), table_index)
    return row


def reference_lines(batch: Batch) -> Iterator[dict[str, Any]]:
    """One dict per partition update, in the reference decoding's shape and order."""
    for p in batch.partitions:
        table_index = int(p["table"])
        table = batch.tables[table_index]
        pk_off, pk_len = int(p["pk_off"]), int(p["pk_len"])
        line: dict[str, Any] = {
            "segment": int(p["segment_id"]),
            "version": int(p["version"]),
            "messaging_version": int(p["messaging"]),
            "position": int(p["position"]),
            "size": int(p["size"]),
            "keyspace": table.keyspace,
            "table": table.name,
            "table_id": str(table.id),
            "cdc": table.cdc,
            "pk": batch.arena[pk_off : pk_off + pk_len].hex(),
        }
        if int(p["pdel_ts"]) != NO_DELETION:
            line["partition_deletion"] = _deletion(int(p["pdel_ts"]), int(p["pdel_ldt"]))
        if int(p["static_row"]) >= 0:
            line["static"] = _row(batch, int(p["static_row"]), table_index)
        first, count = int(p["first_row"]), int(p["n_rows"])
        line["rows"] = [_row(batch, i, table_index) for i in range(first, first + count)]
        yield line
