"""A writer that has read a newer schema than the parser that decoded a batch applies each event to
the table the parser decoded it with: a re-created table's old changes never land in the new one."""

from __future__ import annotations

import uuid

from cdcfast.commitlog.schema import Schema, TableDef
from cdcfast.events import ChangeEvent
from cdcfast.sinks.migrate import aside_name, retain_dropped
from cdcfast.supervisor.messages import as_decoded, decoded_table_ids


def table(table_id: uuid.UUID) -> TableDef:
    return TableDef(table_id, "shop", "users", True, [], [], {})


def event(name: str, ts: int) -> ChangeEvent:
    return ChangeEvent(b"%d" % ts, "shop", name, "insert", [b"k"], [], ts)


def test_events_of_a_recreated_tables_old_id_go_to_its_aside_name() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    parser_schema = Schema({old: table(old)})  # the parser has not seen the DROP and CREATE yet
    writer_schema = retain_dropped(parser_schema, Schema({new: table(new)}))
    events = [event("users", 1), event("users", 2)]

    ids = decoded_table_ids(events, parser_schema)
    got = as_decoded(events, ids, writer_schema)

    assert ids == {"shop.users": str(old)}
    assert [(e.table, e.ts) for e in got] == [(aside_name("users", old), 1), (aside_name("users", old), 2)]


def test_events_decoded_with_the_current_definition_keep_their_table() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    writer_schema = retain_dropped(Schema({old: table(old)}), Schema({new: table(new)}))
    events = [event("users", 3)]

    got = as_decoded(events, decoded_table_ids(events, Schema({new: table(new)})), writer_schema)

    assert got == events
    assert as_decoded(events, {}, writer_schema) == events  # from a parser of an older cdcfast


def test_the_name_to_id_map_is_built_once_per_schema() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    schema = Schema({first: table(first)})
    events = [event("users", 4)]

    assert decoded_table_ids(events, schema) == {"shop.users": str(first)}
    assert schema.ids_by_name is schema.ids_by_name  # built for the first batch, reused for the next
    newer = Schema({second: table(second)})  # the schema read again: a new object, a map of its own
    assert decoded_table_ids(events, newer) == {"shop.users": str(second)}
    assert newer.ids_by_name is not schema.ids_by_name
