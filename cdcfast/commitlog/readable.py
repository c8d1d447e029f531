"""A readable view of a batch, for people: one block per partition update."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cdcfast.commitlog.reference import reference_lines


def _when(ts: int) -> str:
    return f"@{ts}"


def _cell(cell: dict[str, Any]) -> str:
    if "complex_deletion" in cell:
        return f"{cell['col']}: cleared {_when(cell['complex_deletion']['ts'])}"
    path = f"[{cell['path'][0]}]" if "path" in cell else ""
    if cell.get("tombstone"):
        value = "<deleted>"
    else:
        value = f"0x{cell['value']}" if cell["value"] else "''"
    ttl = f" ttl={cell['ttl']}s" if "ttl" in cell else ""
    return f"{cell['col']}{path} ({cell['type']}) = {value} {_when(cell['ts'])}{ttl}"


def readable_lines(batch: Any) -> Iterator[str]:
    for line in reference_lines(batch):
        yield (
            f"{line['segment']}:{line['position']} {line['keyspace']}.{line['table']}"
            f"{'' if line['cdc'] else ' (cdc off)'} key=0x{line['pk']}"
        )
        if "partition_deletion" in line:
            yield f"  partition deleted {_when(line['partition_deletion']['ts'])}"
        rows = ([line["static"]] if "static" in line else []) + line["rows"]
        for row in rows:
            clustering = ", ".join("null" if v is None else f"0x{v}" for v in row["clustering"])
            if row["kind"] != "row":
                deletion = row.get("deletion") or row.get("start_deletion") or {}
                yield f"  {row['bound_kind'].lower()} ({clustering}) {_when(deletion.get('ts', 0))}"
                continue
            what = "insert" if "liveness" in row else ("delete" if "deletion" in row else "update")
            yield f"  row ({clustering}) {what}"
            for cell in row["cells"]:
                yield f"    {_cell(cell)}"
