"""Noticing schema changes that produce no unknown table or column id (``cdc`` switched on or off,
a new table not written yet, a dropped table): a cheap look at the schema source every few
seconds, and a full read only when it changed.

* a folder or file: the schema files' names, sizes and modification times;
* ``cassandra://host:port``: ``SELECT schema_version FROM system.local`` on a session kept open
  (Cassandra changes that UUID with every DDL).

A schema read again keeps the tables it no longer has (dropped in Cassandra) with their last
definition (:func:`cdcfast.sinks.migrate.retain_dropped`), so mutations written before the drop
still decode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cdcfast.commitlog import load_schema
from cdcfast.commitlog.schema import Schema, schema_files
from cdcfast.log import get_logger
from cdcfast.sinks.migrate import retain_dropped


class SchemaWatcher:
    def __init__(self, spec: str) -> None:
        self.spec = str(spec)
        self.log = get_logger("schema", source=self.spec)
        self._session: Any = None
        self._cluster: Any = None
        self.seen = self.signature()

    def signature(self) -> Any:
        """Something that changes when the schema source does (None: cannot tell)."""
        if self.spec.startswith("cassandra://"):
            return self._schema_version()
        path = Path(self.spec)
        try:
            files = schema_files(path) if path.is_dir() else [path] if path.is_file() else []
            return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        except OSError:
            return None

    def changed(self) -> bool:
        now = self.signature()
        if now is None or now == self.seen:
            return False
        self.seen = now
        return True

    def reload(self, previous: Schema | None) -> Schema:
        """The schema read again, keeping the tables ``previous`` had and it dropped."""
        return retain_dropped(previous, load_schema(self.spec))

    def _schema_version(self) -> Any:
        try:
            if self._session is None:
                from cassandra.cluster import Cluster

                match = re.fullmatch(r"cassandra://([^:/]+)(?::(\d+))?/?", self.spec)
                if not match:
                    return None
                self._cluster = Cluster([match.group(1)], port=int(match.group(2) or 9042), connect_timeout=10)
                self._session = self._cluster.connect()
            row = self._session.execute("SELECT schema_version FROM system.local").one()
            return row[0] if row else None
        except Exception as exc:  # noqa: BLE001 - the driver raises many types; try again next time
            self.log.warning("cannot read the schema version", error=f"{type(exc).__name__}: {exc}")
            self.close()
            return None

    def close(self) -> None:
        if self._cluster is not None:
            try:
                self._cluster.shutdown()
            finally:
                self._cluster = self._session = None
