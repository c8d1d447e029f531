"""Tables of :func:`support.schemas.tables_schema` in a throwaway ClickHouse database, written by a
``ClickHouseSink`` as a writer would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from clickhouse_driver import Client

from cdcfast.events import ChangeEvent
from cdcfast.sinks.clickhouse import ClickHouseSink
from support.schemas import tables_schema
from support.services import ensure_services
from support.throwaway import made_clickhouse_database


class ThrowawayTables:
    """``names`` (each like ``one_table_schema``'s ``t``, with its static column ``s`` if ``static``)
    in a new database named ``prefix`` and a random suffix, dropped when the current test ends."""

    def __init__(self, prefix: str, names: tuple[str, ...] = ("t",), static: bool = False) -> None:
        self.dsn = ensure_services(["clickhouse"])["clickhouse"]
        self.keyspace = prefix + uuid.uuid4().hex[:10]
        made_clickhouse_database(self.dsn, self.keyspace)
        self.schema = tables_schema(self.keyspace, names, static)
        self.tables = {(t.keyspace, t.name): t for t in self.schema.tables.values()}
        self.client = Client.from_url(self.dsn)

    def write(
        self,
        events: list[ChangeEvent],
        source: str,
        position: tuple[int, int],
        before_writing: Callable[[], Any] | None = None,
    ) -> ClickHouseSink:
        """``events`` applied by a new sink (its tables made first, then ``before_writing`` run; no
        events: the tables only); gives back the sink, closed."""

        async def run() -> ClickHouseSink:
            sink = ClickHouseSink(self.dsn)
            await sink.connect()
            await sink.prepare(self.schema)
            if before_writing is not None:
                before_writing()
            if events:
                await sink.apply(events, self.tables, source, position)
            await sink.close()
            return sink

        return asyncio.run(run())

    def refuse_writes_to(self, table: str, view: str = "refuse") -> None:
        """The server refuses every insert into ``table`` after taking its data (a materialized view
        ``view`` fails on it); drop ``view`` to let them in again."""
        self.client.execute(
            f"CREATE MATERIALIZED VIEW `{self.keyspace}`.`{view}` ENGINE = Memory AS "
            f"SELECT throwIf(rand() + 1 > 0) AS refused FROM `{self.keyspace}`.`{table}`"
        )
