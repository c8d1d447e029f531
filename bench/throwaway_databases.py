"""PostgreSQL databases a benchmark makes for its runs, dropped when it is done with them: databases
left behind pile up in the throwaway servers' folder (tens of GB over a day of runs) and slow later
runs down."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg


class Databases:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[tuple[str, str]] = []  # (the server's DSN, database name)

    def fresh(self, dsn: str) -> str:
        """A new empty database on ``dsn``'s server: its DSN."""
        name = self.prefix + uuid.uuid4().hex[:10]
        asyncio.run(self._execute(dsn, f"CREATE DATABASE {name}"))
        self.made.append((dsn, name))
        return dsn.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        while self.made:
            dsn, name = self.made.pop()
            asyncio.run(self._execute(dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    @staticmethod
    async def _execute(dsn: str, statement: str) -> None:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(statement)
        finally:
            await admin.close()
