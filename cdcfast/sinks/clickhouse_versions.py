"""Several writers, one ClickHouse state: every writer keeps its own version of each row, joined on read.

ClickHouse has no transaction to make a writer's read-merge-write atomic, and with replication
factor 3 every node's cdcfast writes the same rows into the same sink. So each writer (a source
node) stores its own version of a row and of a partition state: ``_source`` is part of the sorting
key, and versions of different writers never replace each other. A writer

1. reads every writer's versions of what its batch touches and joins them (the states are
   commutative and idempotent: :mod:`cdcfast.sinks.state`), then merges its batch into the join;
2. writes what changed with a ``_version`` above every version it read: its rows win;
3. looks again (:func:`changed_since`): a version another writer stored meanwhile was made without
   this writer's changes, and may win or hold changes the winner lacks. Then it reads again, and writes
   every row whose winning version is not what the join gives (:func:`cdcfast.sinks.merge.converge`),
   above the winners, until nothing else changed meanwhile.

The current state shows each row's winning version: the highest ``_version``, then ``_source``.
Of two writers, the one that looks last finds the other's versions, so the winners end up holding
every writer's changes (docs/exactly-once.md, "Several writers"). A row's stored form also depends
on its partition's state (deletions shadow cells; static values show on every row): ``_basis``
names the partition-state versions it was made from, and a row made from others is stale.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from clickhouse_driver import Client

from cdcfast.sinks.clickhouse_sql import key_table, literal, qualified
from cdcfast.sinks.merge import StoredPartition
from cdcfast.sinks.rowstore import decode_partition, decode_row, encode_partition, encode_row
from cdcfast.sinks.state import PartitionState, RowState


class RowVersion(NamedTuple):
    """One writer's stored version of a row."""

    source: str
    version: int
    state: bytes  # the row state (empty: a static-only row, or a row gone)
    visible: bool
    basis: int  # the partition-state versions it was made from (:func:`basis`)


@dataclass(frozen=True)
class StateTable:
    """A table's state in ClickHouse: database ``database``, tables ``<name>__rows`` and ``<name>__partitions``."""

    database: str
    name: str

    @property
    def rows(self) -> str:
        return qualified(self.database, f"{self.name}__rows")

    @property
    def partitions(self) -> str:
        return qualified(self.database, f"{self.name}__partitions")


@dataclass
class Scope:
    """What a batch touches in one table: its partitions (by partition key bytes, to their key),
    the partitions read whole and the single rows read (``cdcfast.sinks.merge.scope``)."""

    partitions: dict[bytes, tuple[bytes, ...]]
    whole: list[bytes]
    rows: list[bytes]

    def condition(self) -> str:
        return "_pk IN _batch_partitions AND (_pk IN _wanted_partitions OR _key IN _wanted_rows)"

    def tables(self) -> list[dict]:
        """The scope as temporary tables for ``IN`` (no query-size limit, no escaping)."""
        return [
            key_table("_batch_partitions", list(self.partitions)),
            key_table("_wanted_partitions", self.whole),
            key_table("_wanted_rows", self.rows),
        ]


@dataclass
class Snapshot:
    """One read of a batch's scope: every partition's joined state and rows (``stored``, with the
    rows whose winning version is behind marked stale), and what is needed to write above it."""

    stored: dict[tuple[bytes, ...], StoredPartition]
    partition_versions: dict[bytes, dict[str, int]] = field(default_factory=dict)  # pk bytes -> source -> version
    newest: int = 0  # the highest version seen
    blocks: tuple[int, int] = (0, 0)  # the newest insert's block number in the rows, partitions tables then

    @property
    def stale(self) -> bool:
        return any(p.stale for p in self.stored.values())

    def basis(self, pk: bytes, source: str | None = None, version: int = 0) -> int:
        """The basis of a row of partition ``pk`` made now; with ``source``: once that writer's new
        partition-state version ``version`` is stored too."""
        versions = self.partition_versions.get(pk, {})
        if source is not None:
            versions = {**versions, source: version}
        return basis(versions)


def basis(partition_versions: dict[str, int]) -> int:
    """A row's basis: which partition-state versions (source -> version) it was made from; 0: none."""
    if not partition_versions:
        return 0
    text = "\0".join(f"{source}\0{version}" for source, version in sorted(partition_versions.items()))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def read(client: Client, table: StateTable, scope: Scope, generation: int) -> Snapshot:
    """Every writer's versions of ``scope`` above ``generation``, joined; with the tables' newest
    block numbers as the read began (:func:`changed_since`)."""
    rows, partitions = table.rows, table.partitions
    found = client.execute(
        f"SELECT 2, '', '', '', 0, '', ({_newest_block(table, 'rows')}), ({_newest_block(table, 'partitions')}) "
        f"UNION ALL SELECT 0, _pk, '', _state, 0, _source, _version, 0 FROM {partitions} FINAL "
        f"WHERE _pk IN _batch_partitions AND _version > {generation} "
        f"UNION ALL SELECT 1, _pk, _key, _state, _visible, _source, _version, _basis FROM {rows} FINAL "
        f"WHERE {scope.condition()} AND _version > {generation}",
        settings={"strings_as_bytes": True},
        external_tables=scope.tables(),
    )
    snapshot = Snapshot({pk: StoredPartition(None) for pk in scope.partitions.values()})
    partition_states: dict[bytes, list[tuple[str, bytes]]] = {}
    row_versions: dict[bytes, dict[bytes, list[RowVersion]]] = {}
    for kind, pk, key, state, visible, source, version, row_basis in found:
        if kind == 2:
            snapshot.blocks = (version, row_basis)
            continue
        source = source.decode()
        snapshot.newest = max(snapshot.newest, version)
        if kind == 1:
            row_versions.setdefault(pk, {}).setdefault(key, []).append(
                RowVersion(source, version, state, bool(visible), row_basis)
            )
        else:
            snapshot.partition_versions.setdefault(pk, {})[source] = version
            partition_states.setdefault(pk, []).append((source, state))
    for pk_bytes, pk in scope.partitions.items():
        stored = snapshot.stored[pk]
        stored.state = joined_partition(partition_states.get(pk_bytes, []))
        now = snapshot.basis(pk_bytes)
        for key, versions in row_versions.get(pk_bytes, {}).items():
            blob, visible, stale = _joined_row(versions, now)
            stored.rows[key] = (blob, visible)
            if stale:
                stored.stale.add(key)
    return snapshot


def changed_since(
    client: Client, table: StateTable, scope: Scope, generation: int, snapshot: Snapshot, me: str
) -> bool:
    """Whether another writer stored versions of ``scope`` since ``snapshot`` was read: rows in parts
    with a newer block than the newest then. A plain MergeTree numbers its inserts' blocks as they
    become visible; a merge keeps the newest block of its parts (it may make old rows look new:
    the caller reads again for nothing, no harm). No ``FINAL``: the index on ``_pk`` does the work."""
    newest_rows, newest_partitions = snapshot.blocks
    rows, partitions = table.rows, table.partitions
    found = client.execute(
        f"SELECT count() FROM {partitions} WHERE _pk IN _batch_partitions AND _version > {generation} "
        f"AND _source != %(me)s AND {_block()} > {newest_partitions} "
        f"UNION ALL SELECT count() FROM {rows} WHERE {scope.condition()} AND _version > {generation} "
        f"AND _source != %(me)s AND {_block()} > {newest_rows}",
        {"me": me},
        external_tables=scope.tables(),
    )
    return any(count for (count,) in found)


def _newest_block(table: StateTable, kind: str) -> str:
    """The newest block number among the active parts of ``table``'s rows or partitions table."""
    return (
        "SELECT toUInt64(max(max_block_number)) FROM system.parts "
        f"WHERE active AND database = {literal(table.database)} AND table = {literal(f'{table.name}__{kind}')}"
    )


def _block() -> str:
    """A row's part's newest block number (a part's name: partition_minblock_maxblock_level)."""
    return "toUInt64(splitByChar('_', _part)[3])"


def joined_partition(states: list[tuple[str, bytes]]) -> bytes | None:
    """Every writer's partition state, joined (in the order of their names: the same bytes for all)."""
    blobs = [state for _, state in sorted(states)]
    if len(set(blobs)) <= 1:
        return blobs[0] or None if blobs else None
    joined = PartitionState()
    for blob in blobs:
        if blob:
            joined.merge(decode_partition(blob))
    return encode_partition(joined)


def _joined_row(versions: list[RowVersion], now: int) -> tuple[bytes, bool, bool]:
    """A row's state joined over every writer's version, whether it shows (as the winning version
    says) and whether the winning version is stale: made from another partition state than ``now``'s,
    or lacking what another version holds."""
    winner = max(versions, key=lambda v: (v.version, v.source))
    stale = winner.basis != now
    if len({v.state for v in versions}) == 1:
        return winner.state, winner.visible, stale
    joined = RowState()
    for version in sorted(versions):
        if version.state:
            joined.merge(decode_row(version.state))
    mine = decode_row(winner.state) if winner.state else None
    return encode_row(joined), winner.visible, stale or mine != joined


def winners(rows: str, generation: str | int, columns: str = "*") -> str:
    """A query for each row's winning version (``columns`` of it) above ``generation``."""
    return (
        f"SELECT {columns} FROM {rows} FINAL WHERE _version > {generation} "
        "ORDER BY _pk, _key, _version DESC, _source DESC LIMIT 1 BY _pk, _key"
    )
