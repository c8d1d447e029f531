"""What travels between the supervisor, parser workers and writer processes (msgspec)."""

from __future__ import annotations

import hashlib

import msgspec

from cdcfast.commitlog.schema import Schema
from cdcfast.events import ChangeEvent

# A checkpoint position meaning "this whole segment is delivered" (positions are int32 in sinks).
WHOLE_SEGMENT = 2**31 - 1


class WorkItem(msgspec.Struct, frozen=True):
    """A part of a durable stretch of a segment to decode: entries ending after ``after``, up to
    ``limit``. The supervisor cuts stretches at section ends, so items partition the entries."""

    seq: int
    path: str
    version: int
    segment_id: int
    after: int
    limit: int | None  # None: to the end of the marker chain (a COMPLETED segment's last item)


class EventBatch(msgspec.Struct, array_like=True):
    """Changes of one work item (or a part of it), for one writer's ring."""

    seq: int
    part: int
    final: bool  # the work item's last part
    segment_id: int
    position: int  # a sink that applied this batch has delivered everything up to here
    events: list[ChangeEvent]
    trace: str = ""  # the parser's batch span (W3C traceparent) when tracing is on
    schema: str = ""  # fingerprint of the schema the parser decoded with (a writer with another reloads)
    table_ids: dict[str, str] = {}  # "keyspace.table" -> id of the definition its events were decoded with


def schema_fingerprint(schema: Schema) -> str:
    """Equal for schemas that decode and map every CDC table alike."""
    tables = sorted(
        (str(t.id), t.keyspace, t.name, t.cdc, repr(t.partition_key), repr(t.clustering), repr(t.data_columns()))
        for t in schema.tables.values()
    )
    return hashlib.blake2b(repr(tables).encode(), digest_size=8).hexdigest()


def decoded_table_ids(events: list[ChangeEvent], schema: Schema) -> dict[str, str]:
    """The table id behind each table name of ``events``, in the schema they were decoded with."""
    ids = schema.ids_by_name
    named = {(e.keyspace, e.table) for e in events}
    return {f"{ks}.{name}": ids[(ks, name)] for ks, name in named if (ks, name) in ids}


def as_decoded(events: list[ChangeEvent], table_ids: dict[str, str], schema: Schema) -> list[ChangeEvent]:
    """``events`` named as ``schema`` names the definitions they were decoded with. A writer may have
    read the schema after a table was dropped and re-created under its name, while the parser that
    decoded these events had not: the old table's changes then go to its tables set aside
    (``schema`` keeps it under another name), never into the new table's."""
    if not schema.retired:  # only a table kept after its drop can have been given another name
        return events
    names = {str(t.id): t.name for t in schema.tables.values()}
    renamed = {
        qualified: names[table_id]
        for qualified, table_id in table_ids.items()
        if table_id in names and qualified.split(".", 1)[1] != names[table_id]
    }
    if not renamed:
        return events
    return [
        msgspec.structs.replace(e, table=renamed[f"{e.keyspace}.{e.table}"])
        if f"{e.keyspace}.{e.table}" in renamed
        else e
        for e in events
    ]


BATCH_ENCODER = msgspec.msgpack.Encoder()
BATCH_DECODER = msgspec.msgpack.Decoder(EventBatch)
