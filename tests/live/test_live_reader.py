"""Live: a real Cassandra node writes CDC segments, and cdcfast decodes them exactly as Cassandra's reader does.

Per node setup (storage compatibility mode x commit log compression): start a node, create tables
covering every CQL type and every kind of change, run a workload of its own through
cassandra-driver, dump ``system_schema``, drain and stop the node, then decode its ``cdc_raw`` with
Cassandra's own ``CommitLogReader`` (shared/java-reader) and with ``cdcfast inspect --format
reference``: the test keyspace's partition updates must be equal, line for line.

Run with ``python -m pytest tests/live -m slow`` (needs Java 17 and ../shared; about 50 s per
setup on 2 cores, one node at a time). On a mismatch the failure names the first differing partition
update, shows a diff against Cassandra's, and lists the logged statements that carry its timestamps;
the node folder, both decodings and the statement log stay in the test's tmp_path.
"""

from __future__ import annotations

import ipaddress
import json
import random
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from commitlog.test_corpus_reference import readable_diff
from live.cassandra_node import JAVA_READER, LiveNode, NodeSetup, cassandra_node
from support.live import live_marks, schema_uri

KEYSPACE = "live"

SETUPS = [
    NodeSetup("c4-lz4", storage_compat="CASSANDRA_4", compression="LZ4Compressor"),
    NodeSetup("none-zstd", storage_compat="NONE", compression="ZstdCompressor"),
    NodeSetup("none-deflate", storage_compat="NONE", compression="DeflateCompressor"),
    NodeSetup("c4-snappy", storage_compat="CASSANDRA_4", compression="SnappyCompressor"),
    NodeSetup("none-plain", storage_compat="NONE", compression="none"),
]

pytestmark = live_marks(services=False)

# --------------------------------------------------------------------------------------------
# schema

CLUSTERING_TYPES = [
    (f"k{i:02d}", kind, "DESC" if i % 3 == 1 else "ASC")
    for i, kind in enumerate(
        ["bigint", "boolean", "date", "double", "float", "inet", "smallint", "tinyint", "time", "timestamp", "uuid",
         "varint", "decimal", "blob", "ascii", "frozen<list<int>>", "tuple<int, text>", "frozen<point>", "text",
         "timeuuid", "vector<float, 2>", "frozen<map<text, int>>", "frozen<set<text>>", "int"]
        + ["int", "text"] * 6
    )
]  # fmt: skip
WIDE = 70
_clust_columns = ", ".join(f"{name} {kind}" for name, kind, _ in CLUSTERING_TYPES)
_clust_key = ", ".join(name for name, _, _ in CLUSTERING_TYPES)
_clust_order = ", ".join(f"{name} {order}" for name, _, order in CLUSTERING_TYPES)
_wide_columns = ", ".join(f"w{i:02d} {'int' if i % 2 else 'text'}" for i in range(WIDE))

DDL = [
    f"CREATE KEYSPACE {KEYSPACE} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
    f"CREATE TYPE {KEYSPACE}.addr (street text, city text, zip int, tags frozen<set<text>>)",
    f"CREATE TYPE {KEYSPACE}.point (x double, y double, label text)",
    f"""CREATE TABLE {KEYSPACE}.all_types (
        pk1 text, pk2 int, ck1 int, ck2 text, ck3 timeuuid,
        s_note text STATIC, s_count int STATIC, s_tags set<text> STATIC, s_addr addr STATIC,
        c_ascii ascii, c_bigint bigint, c_blob blob, c_boolean boolean, c_date date, c_decimal decimal,
        c_double double, c_duration duration, c_float float, c_inet inet, c_int int, c_smallint smallint,
        c_text text, c_time time, c_timestamp timestamp, c_timeuuid timeuuid, c_tinyint tinyint,
        c_uuid uuid, c_varint varint, c_vector vector<float, 3>, c_vtext vector<text, 2>,
        l_text list<text>, s_int set<int>, m_text_bigint map<text, bigint>,
        fl_text frozen<list<text>>, fs_uuid frozen<set<uuid>>, fm_int_text frozen<map<int, text>>,
        t_tuple tuple<int, text, double>,
        u_addr addr, fu_point frozen<point>,
        n_map map<text, frozen<list<int>>>, n_list list<frozen<map<text, int>>>,
        n_set set<frozen<tuple<int, text>>>, fn_nested frozen<map<text, frozen<set<int>>>>,
        u_list list<frozen<point>>,
        PRIMARY KEY ((pk1, pk2), ck1, ck2, ck3)
    ) WITH CLUSTERING ORDER BY (ck1 ASC, ck2 DESC, ck3 ASC) AND cdc = true""",
    f"""CREATE TABLE {KEYSPACE}.counters (pk text, ck int, hits counter, misses counter, PRIMARY KEY (pk, ck))
        WITH cdc = true""",
    f"CREATE TABLE {KEYSPACE}.simple (id int PRIMARY KEY, v text, n int) WITH cdc = true",
    f"CREATE TABLE {KEYSPACE}.no_cdc (id int PRIMARY KEY, v text) WITH cdc = false",
    f"CREATE TABLE {KEYSPACE}.keys_only (k text, c int, PRIMARY KEY (k, c)) WITH cdc = true",
    f"""CREATE TABLE {KEYSPACE}.evolve (id int, ck int, a text, b int, gone text, s_gone text STATIC,
        tags set<text>, contact frozen<addr>, PRIMARY KEY (id, ck)) WITH cdc = true""",
    f"""CREATE TABLE {KEYSPACE}.bulk (bucket int, seq bigint, at timestamp, payload blob, note text,
        PRIMARY KEY (bucket, seq)) WITH cdc = true""",
    # every type that can cluster, and more than 32 clustering columns (several clustering header blocks)
    f"""CREATE TABLE {KEYSPACE}.clust (k int, {_clust_columns}, v text, PRIMARY KEY (k, {_clust_key}))
        WITH CLUSTERING ORDER BY ({_clust_order}) AND cdc = true""",
    # more than 64 regular columns: rows that carry a subset use the large column-subset encoding
    f"CREATE TABLE {KEYSPACE}.wide (k int, c int, {_wide_columns}, PRIMARY KEY (k, c)) WITH cdc = true",
]

SCALAR_COLUMNS = [
    "c_ascii", "c_bigint", "c_blob", "c_boolean", "c_date", "c_decimal", "c_double", "c_duration", "c_float",
    "c_inet", "c_int", "c_smallint", "c_text", "c_time", "c_timestamp", "c_timeuuid", "c_tinyint", "c_uuid",
    "c_varint", "c_vector", "c_vtext",
]  # fmt: skip
COLLECTION_COLUMNS = [
    "l_text", "s_int", "m_text_bigint", "fl_text", "fs_uuid", "fm_int_text", "t_tuple", "u_addr", "fu_point",
    "n_map", "n_list", "n_set", "fn_nested", "u_list",
]  # fmt: skip
STATIC_COLUMNS = ["s_note", "s_count", "s_tags", "s_addr"]
KEY_COLUMNS = ["pk1", "pk2", "ck1", "ck2", "ck3"]
DATA_COLUMNS = STATIC_COLUMNS + SCALAR_COLUMNS + COLLECTION_COLUMNS

# --------------------------------------------------------------------------------------------
# values

ALPHABET = 'abcxyzXYZ019 _-./"\\\n\t\u00e9\u00df\u00fc\u4e2d\u6587\u0416\U0001d11e\U0001f600\U00010348\u0000'


def text(rng: random.Random, longest: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def ascii_text(rng: random.Random, longest: int = 12) -> str:
    return "".join(chr(rng.randint(0, 127)) for _ in range(rng.randint(0, longest)))


def timeuuid(rng: random.Random) -> uuid.UUID:
    """A version-1 UUID from the generator (deterministic, unlike uuid1())."""
    stamp = rng.getrandbits(60)
    clock_seq, node = rng.getrandbits(14), rng.getrandbits(48)
    return uuid.UUID(
        fields=(stamp & 0xFFFFFFFF, (stamp >> 32) & 0xFFFF, ((stamp >> 48) & 0x0FFF) | 0x1000,
                ((clock_seq >> 8) & 0x3F) | 0x80, clock_seq & 0xFF, node)
    )  # fmt: skip


def f32(rng: random.Random) -> float:
    return rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-3e38, 3e38), 0.0, -0.0, float("nan"), float("inf")])


def f64(rng: random.Random) -> float:
    return rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-1e308, 1e308), 5e-324, -0.0, float("nan"), float("-inf")])


def duration(rng: random.Random) -> Any:
    from cassandra.util import Duration

    sign = rng.choice([1, -1])
    return Duration(sign * rng.randint(0, 2**31 - 1), sign * rng.randint(0, 400), sign * rng.randint(0, 2**62))


def point(rng: random.Random) -> tuple:
    return (f64(rng), rng.choice([None, f64(rng)]), rng.choice([None, text(rng)]))


GENERATORS: dict[str, Any] = {
    "s_note": text,
    "s_count": lambda r: r.randint(-(2**31), 2**31 - 1),
    "s_tags": lambda r: {text(r) for _ in range(r.randint(0, 3))},
    "s_addr": lambda r: (text(r), None, r.randint(-5, 5), None),
    "c_ascii": ascii_text,
    "c_bigint": lambda r: r.randint(-(2**63), 2**63 - 1),
    "c_blob": lambda r: r.randbytes(r.choice([0, 1, 16, 200, 3000])),
    "c_boolean": lambda r: r.random() < 0.5,
    "c_date": lambda r: r.randint(0, 2**32 - 1),  # the raw unsigned day number (2^31 = 1970-01-01)
    "c_decimal": lambda r: Decimal(r.randint(-(10**40), 10**40)).scaleb(r.randint(-60, 60)),
    "c_double": f64,
    "c_duration": duration,
    "c_float": f32,
    "c_inet": lambda r: str(
        ipaddress.IPv4Address(r.getrandbits(32)) if r.random() < 0.5 else ipaddress.IPv6Address(r.getrandbits(128))
    ),
    "c_int": lambda r: r.randint(-(2**31), 2**31 - 1),
    "c_smallint": lambda r: r.randint(-(2**15), 2**15 - 1),
    "c_text": lambda r: text(r, 40),
    "c_time": lambda r: r.randint(0, 86_400 * 10**9 - 1),
    "c_timestamp": lambda r: r.randint(-(2**52), 2**52),  # milliseconds
    "c_timeuuid": timeuuid,
    "c_tinyint": lambda r: r.randint(-128, 127),
    "c_uuid": lambda r: uuid.UUID(int=r.getrandbits(128)),
    "c_varint": lambda r: r.randint(-(2**300), 2**300) >> r.randint(0, 300),
    "c_vector": lambda r: [f32(r) for _ in range(3)],
    "c_vtext": lambda r: [text(r), text(r, 300)],
    "l_text": lambda r: [text(r) for _ in range(r.randint(0, 4))],
    "s_int": lambda r: {r.randint(-1000, 1000) for _ in range(r.randint(0, 4))},
    "m_text_bigint": lambda r: {text(r): r.randint(-(2**63), 2**63 - 1) for _ in range(r.randint(0, 4))},
    "fl_text": lambda r: [text(r) for _ in range(r.randint(0, 4))],
    "fs_uuid": lambda r: {uuid.UUID(int=r.getrandbits(128)) for _ in range(r.randint(0, 3))},
    "fm_int_text": lambda r: {r.randint(-(2**31), 2**31 - 1): text(r) for _ in range(r.randint(0, 3))},
    "t_tuple": lambda r: (r.choice([None, r.randint(-5, 5)]), r.choice([None, text(r)]), f64(r)),
    "u_addr": lambda r: (text(r), r.choice([None, text(r)]), r.randint(0, 99999), frozenset({text(r)})),
    "fu_point": point,
    "n_map": lambda r: {text(r): [r.randint(-9, 9) for _ in range(r.randint(0, 3))] for _ in range(r.randint(0, 3))},
    "n_list": lambda r: [{text(r): r.randint(-9, 9)} for _ in range(r.randint(0, 3))],
    "n_set": lambda r: {(r.randint(-9, 9), text(r)) for _ in range(r.randint(0, 3))},
    "fn_nested": lambda r: {text(r): {r.randint(-9, 9) for _ in range(2)} for _ in range(r.randint(0, 3))},
    "u_list": lambda r: [point(r) for _ in range(r.randint(0, 3))],
}

CLUSTERING_GENERATORS: dict[str, Any] = {
    **{kind: GENERATORS[f"c_{kind}"] for kind in
       ("bigint", "boolean", "date", "double", "float", "inet", "smallint", "tinyint", "time", "timestamp",
        "uuid", "varint", "decimal", "blob", "ascii", "text", "timeuuid", "int")},
    "frozen<list<int>>": lambda r: [r.randint(-9, 9) for _ in range(r.randint(0, 3))],
    "tuple<int, text>": lambda r: (r.randint(-9, 9), text(r)),
    "frozen<point>": point,
    "vector<float, 2>": lambda r: [f32(r), f32(r)],
    "frozen<map<text, int>>": lambda r: {text(r): r.randint(-9, 9) for _ in range(r.randint(0, 2))},
    "frozen<set<text>>": lambda r: {text(r) for _ in range(r.randint(0, 2))},
}  # fmt: skip

# --------------------------------------------------------------------------------------------
# workload


class Workload:
    """Every kind of change, through prepared statements; each statement is logged for diagnostics."""

    def __init__(self, session: Any, seed: int) -> None:
        self.session = session
        self.rng = random.Random(seed)
        # A logical write clock six hours in the past: explicit timestamps stay ordered, and a
        # column drop (stamped with the server's clock) shadows every cell written before it.
        self.clock = time.time_ns() // 1000 - 6 * 3600 * 10**6
        self.ops: list[dict] = []
        self.prepared: dict[str, Any] = {}
        self.pk_pool = [("", 0), ("a", 1), ("b", -7), ("\U0001d11e\u00e9", 2**31 - 1), ("p" * 300, 3)]
        self.ck3_pool = [timeuuid(self.rng) for _ in range(4)]

    def ts(self) -> int:
        self.clock += 1000
        return self.clock

    def prepare(self, cql: str) -> Any:
        if cql not in self.prepared:
            self.prepared[cql] = self.session.prepare(cql)
        return self.prepared[cql]

    def run(self, cql: str, *values: Any) -> Any:
        self.ops.append({"cql": cql, "values": values})
        return self.session.execute(self.prepare(cql), values)

    def ddl(self, cql: str) -> None:
        self.ops.append({"cql": cql, "values": ()})
        self.session.execute(cql, timeout=120)

    def concurrent(self, cql: str, rows: list[tuple]) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

        self.ops.extend({"cql": cql, "values": row} for row in rows)
        for ok, result in execute_concurrent_with_args(self.session, self.prepare(cql), rows, concurrency=24):
            assert ok, result

    def insert(self, key: tuple, values: dict[str, Any], ts: int | None = None, ttl: int | None = None) -> None:
        columns = list(values)
        using = " AND ".join(u for u in (ttl is not None and "TTL ?", ts is not None and "TIMESTAMP ?") if u)
        cql = (
            f"INSERT INTO {KEYSPACE}.all_types ({', '.join(KEY_COLUMNS + columns)}) "
            f"VALUES ({', '.join('?' * (len(KEY_COLUMNS) + len(columns)))})" + (f" USING {using}" if using else "")
        )
        extra = tuple(v for v in (ttl, ts) if v is not None)
        self.run(cql, *key, *values.values(), *extra)

    def key(self, ck1: int | None = None) -> tuple:
        pk1, pk2 = self.rng.choice(self.pk_pool)
        ck1 = self.rng.randint(0, 30) if ck1 is None else ck1
        ck2 = self.rng.choice(["", "a", "b", "m", "z", "\u00e9", "\U0001f600"])
        return (pk1, pk2, ck1, ck2, self.rng.choice(self.ck3_pool))

    # -- phases ---------------------------------------------------------------------------------

    def schema(self) -> None:
        for cql in DDL:
            self.ddl(cql)

    def extremes(self) -> None:
        from cassandra.util import Duration

        tu_min = uuid.UUID("00000000-0000-1000-8080-808080808080")
        lows = {
            "c_ascii": "", "c_bigint": -(2**63), "c_blob": b"", "c_boolean": False, "c_date": 0,
            "c_decimal": Decimal("1E-400"), "c_double": float("nan"), "c_duration": Duration(0, 0, 0),
            "c_float": -0.0, "c_inet": "0.0.0.0", "c_int": -(2**31), "c_smallint": -(2**15), "c_text": "",
            "c_time": 0, "c_timestamp": -(2**63), "c_timeuuid": tu_min, "c_tinyint": -128,
            "c_uuid": uuid.UUID(int=0), "c_varint": -(2**1000), "c_vector": [float("nan"), float("inf"), -0.0],
            "c_vtext": ["", ""], "l_text": [""], "s_int": {-(2**31)}, "m_text_bigint": {"": -(2**63)},
            "fl_text": [], "fs_uuid": set(), "fm_int_text": {}, "t_tuple": (None, None, None),
            "u_addr": (None, None, None, None), "fu_point": (None, None, None), "n_map": {"": []},
            "n_list": [{}], "n_set": {(0, "")}, "fn_nested": {"": set()}, "u_list": [(None, None, None)],
            "s_note": "", "s_count": -(2**31), "s_tags": {""},
        }  # fmt: skip
        highs = {
            "c_ascii": "".join(map(chr, range(128))), "c_bigint": 2**63 - 1, "c_blob": self.rng.randbytes(70_000),
            "c_boolean": True, "c_date": 2**32 - 1, "c_decimal": Decimal("-" + "9" * 120 + "E+1000"),
            "c_double": float("inf"), "c_duration": Duration(2**31 - 1, 2**31 - 1, 2**63 - 1),
            "c_float": float("-inf"), "c_inet": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "c_int": 2**31 - 1,
            "c_smallint": 2**15 - 1, "c_text": "\U0001f600\U0001d11e\u0000" * 2000, "c_time": 86_400 * 10**9 - 1,
            "c_timestamp": 2**63 - 1, "c_timeuuid": uuid.UUID("ffffffff-ffff-1fff-bf7f-7f7f7f7f7f7f"),
            "c_tinyint": 127, "c_uuid": uuid.UUID(int=2**128 - 1), "c_varint": 2**1000,
            "c_vector": [3.4028234663852886e38, -1.401298464324817e-45, float("-inf")],
            "c_vtext": ["\U0001f600" * 100, "x" * 70_000], "l_text": ["\U0001f600" * 50] * 5,
            "s_int": set(range(-5, 5)), "m_text_bigint": {"\U0001d11e": 2**63 - 1, "a": 0},
            "fl_text": ["", "a", "\U0001f600"], "fs_uuid": {uuid.UUID(int=2**128 - 1)},
            "fm_int_text": {2**31 - 1: "max", -(2**31): "min"}, "t_tuple": (2**31 - 1, "\U0001f600", float("nan")),
            "u_addr": ("s" * 1000, "\U0001d11e", -(2**31), frozenset({"", "x"})),
            "fu_point": (float("inf"), -0.0, ""), "n_map": {"k": [2**31 - 1, -(2**31)]},
            "n_list": [{"a": 1, "b": 2}], "n_set": {(2**31 - 1, "\U0001f600")}, "fn_nested": {"x": {1, 2, 3}},
            "u_list": [(1.0, 2.0, "p")] * 3, "s_note": "\U0001f600" * 100, "s_count": 2**31 - 1,
            "s_tags": {"a", "b"},
        }  # fmt: skip
        self.insert(("", 0, -(2**31), "", tu_min), lows, ts=self.ts())
        self.insert(("\U0001d11e\u00e9", 2**31 - 1, 2**31 - 1, "\U0001f600", self.ck3_pool[0]), highs, ts=self.ts())
        specials = {"c_double": -0.0, "c_float": float("nan"), "c_vector": [0.0, -0.0, float("nan")]}
        self.insert(("a", 1, 0, "zero", self.ck3_pool[1]), specials, ts=self.ts(), ttl=0)
        big = {"c_blob": self.rng.randbytes(400_000), "l_text": ["x" * 1000] * 20}  # close to the 512 KiB limit
        self.insert(("big", 1, 0, "", self.ck3_pool[1]), big, ts=self.ts())
        inets = ["127.0.0.1", "::1", "2001:db8::ff00:42:8329", "::ffff:1.2.3.4", "255.255.255.255"]
        for i, address in enumerate(inets):
            self.insert(("inet", i, i, address, self.ck3_pool[2]), {"c_inet": address}, ts=self.ts())
        # empty values of fixed-length types (legal in CQL through blobAs*)
        self.run(
            f"INSERT INTO {KEYSPACE}.all_types (pk1, pk2, ck1, ck2, ck3, c_int, c_double, c_uuid, c_boolean, "
            "c_timestamp) VALUES (?, ?, blobAsInt(0x), ?, ?, blobAsInt(0x), blobAsDouble(0x), blobAsUuid(0x), "
            "blobAsBoolean(0x), blobAsTimestamp(0x)) USING TIMESTAMP ?",
            "empty", 0, "", self.ck3_pool[3], self.ts(),
        )  # fmt: skip

    def batch(self, kind: Any, statements: list[tuple[Any, tuple]]) -> None:
        from cassandra.query import BatchStatement

        batch = BatchStatement(batch_type=kind)
        for statement, values in statements:
            batch.add(statement, values)
        self.ops.append({"cql": f"BATCH {kind}", "values": [(s.query_string, v) for s, v in statements]})
        self.session.execute(batch)

    INSERT_ALL = (
        f"INSERT INTO {KEYSPACE}.all_types ({', '.join(KEY_COLUMNS + DATA_COLUMNS)}) "
        f"VALUES ({', '.join('?' * (len(KEY_COLUMNS) + len(DATA_COLUMNS)))}) USING TTL ? AND TIMESTAMP ?"
    )

    def random_values(self, columns: list[str], present: float = 0.55, null: float = 0.1) -> list[Any]:
        """A value, a null (a tombstone) or unset (no cell) for each column."""
        from cassandra.query import UNSET_VALUE

        out = []
        for column in columns:
            roll = self.rng.random()
            out.append(
                GENERATORS[column](self.rng) if roll < present else None if roll < present + null else UNSET_VALUE
            )
        return out

    def random_rows(self, count: int) -> None:
        rows = []
        for i in range(count):
            ttl = self.rng.choice([3600, 86400]) if i % 10 == 0 else 0
            rows.append((*self.key(), *self.random_values(DATA_COLUMNS), ttl, self.ts()))
        self.concurrent(self.INSERT_ALL, rows)

    def random_batches(self, count: int) -> None:
        """Single-partition batches of mixed changes, each statement with its own timestamp and TTL:
        rows whose cells differ in timestamp, TTL and liveness, deletions mixed with writes."""
        from cassandra.query import UNSET_VALUE, BatchType

        t, r = f"{KEYSPACE}.all_types", self.rng
        full = "WHERE pk1 = ? AND pk2 = ? AND ck1 = ? AND ck2 = ? AND ck3 = ?"
        part = "WHERE pk1 = ? AND pk2 = ?"
        ins = self.prepare(self.INSERT_ALL)
        upd = self.prepare(
            f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET c_text = ?, c_int = ?, s_note = ?, "
            f"m_text_bigint = m_text_bigint + ?, l_text = l_text + ?, u_addr.city = ?, c_vector = ? {full}"
        )
        upd_columns = ["c_text", "c_int", "s_note", "m_text_bigint", "l_text", "c_ascii", "c_vector"]
        cdel = self.prepare(
            f"DELETE c_text, l_text, m_text_bigint, u_addr.zip, s_note FROM {t} USING TIMESTAMP ? {full}"
        )
        rowdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? {full}")
        rngdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? {part} AND ck1 >= ? AND ck1 <= ?")
        prefixdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? {part} AND ck1 = ? AND ck2 > ?")
        pdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? {part}")
        stat = self.prepare(f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET s_count = ?, s_tags = s_tags + ? {part}")
        kinds = ["ins", "upd", "cdel", "rowdel", "rngdel", "prefixdel", "pdel", "stat"]
        for _ in range(count):
            pk = r.choice(self.pk_pool)
            stamps = [self.ts() for _ in range(r.randint(2, 6))]
            r.shuffle(stamps)
            statements: list[tuple[Any, tuple]] = []
            for ts in stamps:
                kind = r.choices(kinds, weights=[6, 6, 2, 1, 1, 1, 0.3, 2])[0]
                key = (*pk, r.randint(0, 4), r.choice(["", "a", "z"]), r.choice(self.ck3_pool[:2]))
                ttl = r.choice([0, 0, 60, 86400])
                if kind == "ins":
                    statements.append((ins, (*key, *self.random_values(DATA_COLUMNS, 0.4, 0.1), ttl, ts)))
                elif kind == "upd":
                    values = self.random_values(upd_columns, 0.6, 0.15)
                    # appending an unset, null or empty list fails in Cassandra 5.0.9 (ClassCastException)
                    values[4] = values[4] if isinstance(values[4], list) and values[4] else [text(r)]
                    values[3] = values[3] if isinstance(values[3], dict) and values[3] else {text(r): 1}
                    if values[5] is not UNSET_VALUE and values[5] is not None:
                        values[5] = values[5][:10]  # u_addr.city takes text
                    statements.append((upd, (ttl, ts, *values, *key)))
                elif kind == "cdel":
                    statements.append((cdel, (ts, *key)))
                elif kind == "rowdel":
                    statements.append((rowdel, (ts, *key)))
                elif kind == "rngdel":
                    low = r.randint(0, 4)
                    statements.append((rngdel, (ts, *pk, low, low + r.randint(0, 2))))
                elif kind == "prefixdel":
                    statements.append((prefixdel, (ts, *pk, r.randint(0, 4), r.choice(["", "b"]))))
                elif kind == "pdel":
                    statements.append((pdel, (ts, *pk)))
                else:
                    statements.append((stat, (ttl, ts, r.randint(-9, 9), {text(r)}, *pk)))
            self.batch(r.choice([BatchType.UNLOGGED, BatchType.LOGGED]), statements)

    def clustering(self, rows: int) -> None:
        """Rows and prefix/slice deletions of a table clustered by every clusterable type, 36 columns deep."""
        ks, r = KEYSPACE, self.rng
        names = [name for name, _, _ in CLUSTERING_TYPES]
        marks = ", ".join("?" * len(names))
        cql = f"INSERT INTO {ks}.clust (k, {_clust_key}, v) VALUES (?, {marks}, ?) USING TIMESTAMP ?"
        keys = []
        for i in range(rows):
            key = tuple(CLUSTERING_GENERATORS[kind](r) for _, kind, _ in CLUSTERING_TYPES)
            keys.append(key)
            self.run(cql, i % 4, *key, text(r), self.ts())
        for n in (1, 2, 5, 20, 32, 33, 35, len(names)):
            key = r.choice(keys)
            condition = " AND ".join(f"{name} = ?" for name in names[:n])
            self.run(f"DELETE FROM {ks}.clust USING TIMESTAMP ? WHERE k = ? AND {condition}", self.ts(), 0, *key[:n])
        for n in (0, 1, 32, 33):
            key = r.choice(keys)
            condition = " AND ".join([f"{name} = ?" for name in names[:n]] + [f"{names[n]} > ?"])
            self.run(
                f"DELETE FROM {ks}.clust USING TIMESTAMP ? WHERE k = ? AND {condition}", self.ts(), 1, *key[: n + 1]
            )

    def wide(self) -> None:
        """A table of 70 regular columns; batches whose rows carry different column subsets."""
        from cassandra.query import UNSET_VALUE, BatchType

        r, columns = self.rng, [f"w{i:02d}" for i in range(WIDE)]
        cql = (
            f"INSERT INTO {KEYSPACE}.wide (k, c, {', '.join(columns)}) VALUES (?, ?, {', '.join('?' * WIDE)}) "
            "USING TIMESTAMP ?"
        )
        statement = self.prepare(cql)

        def row(keep: float) -> list[Any]:
            return [
                (r.randint(-99, 99) if i % 2 else text(r))
                if r.random() < keep
                else r.choice([UNSET_VALUE] * 4 + [None])
                for i in range(WIDE)
            ]

        for k in range(12):
            keeps = [1.0, 0.03, 0.97, 0.5, 0.0, 0.2, 0.8]
            self.batch(BatchType.UNLOGGED, [(statement, (k, c, *row(keep), self.ts())) for c, keep in enumerate(keeps)])
        for k in range(20):
            self.run(cql, 100 + k, 0, *row(r.random()), self.ts())

    def extreme_timestamps(self) -> None:
        """One partition update whose timestamps span the whole range (negative, zero, 2^62) and whose
        TTLs and deletion times differ: the deltas of the update's encoding stats at their widest."""
        from cassandra.query import BatchType

        t, c3 = f"{KEYSPACE}.all_types", self.ck3_pool
        full = "WHERE pk1 = ? AND pk2 = ? AND ck1 = ? AND ck2 = ? AND ck3 = ?"
        ins = self.prepare(f"INSERT INTO {t} (pk1, pk2, ck1, ck2, ck3, c_text) VALUES (?, ?, ?, ?, ?, ?) "
                           "USING TTL ? AND TIMESTAMP ?")  # fmt: skip
        upd = self.prepare(
            f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET c_int = ?, s_note = ?, s_int = s_int + ? {full}"
        )
        cdel = self.prepare(f"DELETE c_bigint, m_text_bigint FROM {t} USING TIMESTAMP ? {full}")
        rdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ? AND ck1 > ?")
        for pk2, stamps in enumerate([(-(2**62), -1, 0, 1, 2**62), (2**62, 1, -1), (0, 0, 0)]):
            statements: list[tuple[Any, tuple]] = [(rdel, (stamps[0], "ts", pk2, 90))]
            for i, ts in enumerate(stamps):
                key = ("ts", pk2, i % 3, "e", c3[i % 2])
                ttl = [0, 1, 100_000_000, 0, 7][i % 5]
                statements.append((ins, (*key, f"at {ts}", ttl, ts)))
                statements.append((upd, (ttl, ts, i, f"static at {ts}", {i}, *key)))
                statements.append((cdel, (ts, *key)))
            self.batch(BatchType.UNLOGGED, statements)
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ?", -(2**62), "ts", 9)
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ?", 2**62, "ts", 10)

    def max_ttl(self) -> None:
        """The longest TTL (20 years) expires past 2038: accepted by messaging 13 (unsigned deletion
        times), rejected under storage_compatibility_mode CASSANDRA_4."""
        from cassandra import InvalidRequest

        t, where = f"{KEYSPACE}.all_types", "WHERE pk1 = ? AND pk2 = ? AND ck1 = ? AND ck2 = ? AND ck3 = ?"
        try:
            self.run(f"INSERT INTO {KEYSPACE}.simple (id, v) VALUES (?, ?) USING TTL ? AND TIMESTAMP ?",
                     9000, "max ttl", 630_720_000, self.ts())  # fmt: skip
            self.run(f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET l_text = l_text + ?, c_int = ? {where}",
                     630_720_000, self.ts(), ["forever"], 1, "ttl", 1, 1, "max", self.ck3_pool[0])  # fmt: skip
        except InvalidRequest as exc:
            self.ops.append({"cql": "rejected", "values": (str(exc),)})

    def changes(self) -> None:
        ks, r = KEYSPACE, self.rng
        where = "WHERE pk1 = ? AND pk2 = ? AND ck1 = ? AND ck2 = ? AND ck3 = ?"
        t = f"{ks}.all_types"
        key = ("chg", 1, 1, "k", self.ck3_pool[0])
        full = {c: GENERATORS[c](r) for c in DATA_COLUMNS}
        full["l_text"] = ["l0", "l1", "l2", "l3"]
        self.insert(key, full, ts=self.ts())
        # cell updates, a per-cell TTL, a stale write that loses, cell deletes, nulls
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET c_text = ?, c_int = ? {where}", self.ts(), "upd", 42, *key)
        self.run(f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET c_blob = ? {where}", 7200, self.ts(), b"\x00\xff", *key)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET c_text = ? {where}", self.clock - 10**9, "stale", *key)
        self.run(f"DELETE c_bigint, c_inet, fl_text FROM {t} USING TIMESTAMP ? {where}", self.ts(), *key)
        self.insert(key, {"c_text": None, "l_text": None, "u_addr": None, "fu_point": None}, ts=self.ts())
        self.insert(("chg", 1, 9, "ttl", self.ck3_pool[1]), {"c_text": "expires"}, ts=self.ts(), ttl=86400)
        self.insert(("chg", 1, 10, "", self.ck3_pool[1]), {}, ts=self.ts())  # primary key liveness only
        # collections: add, remove, overwrite, element set and delete; lists: append, prepend, by index
        k2 = ("chg", 1, 2, "coll", self.ck3_pool[1])
        self.insert(k2, {"l_text": ["a", "b", "c"], "s_int": {1, 2, 3}, "m_text_bigint": {"x": 1}}, ts=self.ts())
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET s_int = s_int + ? {where}", self.ts(), {4, 5}, *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET s_int = s_int - ? {where}", self.ts(), {1}, *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET s_int = ? {where}", self.ts(), {7}, *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET s_int = ? {where}", self.ts(), set(), *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET m_text_bigint[?] = ? {where}", self.ts(), "y", -1, *k2)
        self.run(
            f"UPDATE {t} USING TIMESTAMP ? SET m_text_bigint = m_text_bigint + ? {where}", self.ts(), {"z": 9}, *k2
        )
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET m_text_bigint = m_text_bigint - ? {where}", self.ts(), {"x"}, *k2)
        self.run(f"DELETE m_text_bigint[?] FROM {t} USING TIMESTAMP ? {where}", "y", self.ts(), *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET l_text = l_text + ? {where}", self.ts(), ["d", "e"], *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET l_text = ? + l_text {where}", self.ts(), ["_0", "_1"], *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET l_text[?] = ? {where}", self.ts(), 1, "by-index", *k2)
        self.run(f"DELETE l_text[?] FROM {t} USING TIMESTAMP ? {where}", 0, self.ts(), *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET l_text = l_text - ? {where}", self.ts(), ["b"], *k2)
        self.run(f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET l_text = l_text + ? {where}", 600, self.ts(), ["t"], *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET n_map[?] = ? {where}", self.ts(), "nm", [1, 2], *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET n_set = n_set + ? {where}", self.ts(), {(1, "a")}, *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET n_list = n_list + ? {where}", self.ts(), [{"q": 1}], *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET u_list = u_list + ? {where}", self.ts(), [(1.0, None, "u")], *k2)
        # non-frozen UDT: whole value, one field, field delete; frozen UDT and tuple overwrite
        addr = ("main st", "springfield", 12345, frozenset({"home"}))
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET u_addr = ? {where}", self.ts(), addr, *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET u_addr.city = ? {where}", self.ts(), "shelbyville", *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET u_addr.tags = ? {where}", self.ts(), frozenset({"a", "b"}), *k2)
        self.run(f"DELETE u_addr.zip FROM {t} USING TIMESTAMP ? {where}", self.ts(), *k2)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET fu_point = ?, t_tuple = ? {where}",
                 self.ts(), (1.5, 2.5, "p"), (1, "t", -0.0), *k2)  # fmt: skip
        # static-only changes, a static cell delete
        pk = ("chg", 1)
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET s_note = ?, s_count = ? WHERE pk1 = ? AND pk2 = ?",
                 self.ts(), "static", 5, *pk)  # fmt: skip
        self.run(f"UPDATE {t} USING TIMESTAMP ? SET s_tags = s_tags + ? WHERE pk1 = ? AND pk2 = ?",
                 self.ts(), {"t1", "t2"}, *pk)  # fmt: skip
        self.run(f"UPDATE {t} USING TTL ? AND TIMESTAMP ? SET s_note = ? WHERE pk1 = ? AND pk2 = ?",
                 3600, self.ts(), "static-ttl", *pk)  # fmt: skip
        self.run(f"DELETE s_count FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ?", self.ts(), *pk)
        self.run(f"DELETE s_tags FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ?", self.ts(), *pk)
        # JSON inserts: DEFAULT NULL writes tombstones for every other column, DEFAULT UNSET does not
        doc = {"pk1": "json", "pk2": 1, "ck1": 1, "ck2": "j", "ck3": str(self.ck3_pool[0]), "c_text": "from json",
               "c_vector": [1, 2, 3], "m_text_bigint": {"a": 1}, "u_addr": {"city": "x", "tags": ["q"]}}  # fmt: skip
        self.run(f"INSERT INTO {t} JSON ? USING TIMESTAMP ?", json.dumps(doc), self.ts())
        doc["ck1"] = 2
        self.run(f"INSERT INTO {t} JSON ? DEFAULT UNSET USING TIMESTAMP ?", json.dumps(doc), self.ts())
        # rows and partitions deleted
        for ck1 in range(12):
            self.insert(("del", 1, ck1, "r", self.ck3_pool[ck1 % 4]), {"c_int": ck1, "s_note": "x"}, ts=self.ts())
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {where}", self.ts(), "del", 1, 3, "r", self.ck3_pool[3])
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ?", self.ts(), "del", 2)
        self.insert(("del", 2, 1, "after", self.ck3_pool[0]), {"c_int": 1}, ts=self.ts())
        # clustering range deletes: slices, prefixes, the DESC column, multi-column slices
        rng_where = "WHERE pk1 = ? AND pk2 = ?"
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 > ?", self.ts(), "del", 1, 9)
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 >= ? AND ck1 < ?", self.ts(), "del", 1, 4, 6)
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 = ?", self.ts(), "del", 1, 2)
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 = ? AND ck2 = ?", self.ts(), "del", 1, 1, "r")
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 = ? AND ck2 > ?", self.ts(), "del", 1, 0, "m")
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 = ? AND ck2 <= ? AND ck2 > ?",
                 self.ts(), "del", 1, 7, "q", "b")  # fmt: skip
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND (ck1, ck2) > (?, ?) AND (ck1) < (?)",
                 self.ts(), "del", 3, 1, "c", 5)  # fmt: skip
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 < ?", self.ts(), "del", 4, -5)
        self.run(f"DELETE FROM {t} USING TIMESTAMP ? {rng_where} AND ck1 = ? AND ck2 = ? AND ck3 > ?",
                 self.ts(), "del", 1, 8, "r", self.ck3_pool[2])  # fmt: skip
        # conditional writes (LWT): the applied ones reach the table with a ballot timestamp
        for i in range(3):
            self.run(f"INSERT INTO {t} (pk1, pk2, ck1, ck2, ck3, c_text) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                     "lwt", 1, i, "x", self.ck3_pool[0], f"lwt {i}")  # fmt: skip
        self.run(f"INSERT INTO {t} (pk1, pk2, ck1, ck2, ck3, c_text) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                 "lwt", 1, 0, "x", self.ck3_pool[0], "not applied")  # fmt: skip
        self.run(f"UPDATE {t} SET c_text = ?, s_tags = s_tags + ? {where} IF c_text = ?",
                 "cas", {"cas"}, "lwt", 1, 1, "x", self.ck3_pool[0], "lwt 1")  # fmt: skip
        self.run(f"DELETE FROM {t} {where} IF EXISTS", "lwt", 1, 2, "x", self.ck3_pool[0])

    def batches(self) -> None:
        from cassandra.query import BatchType

        ks, t = KEYSPACE, f"{KEYSPACE}.all_types"
        ins = self.prepare(
            f"INSERT INTO {t} (pk1, pk2, ck1, ck2, ck3, c_text) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        rdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ? AND ck1 >= ? AND ck1 <= ?")
        simple = self.prepare(f"INSERT INTO {ks}.simple (id, v, n) VALUES (?, ?, ?) USING TIMESTAMP ?")
        no_cdc = self.prepare(f"INSERT INTO {ks}.no_cdc (id, v) VALUES (?, ?) USING TIMESTAMP ?")

        execute = self.batch

        c3 = self.ck3_pool
        # logged: several partitions and tables; the simple and no_cdc rows share a key, so one
        # mutation carries a CDC and a non-CDC partition update
        for i in range(5):
            execute(BatchType.LOGGED, [
                (ins, ("batch", i, 1, "l", c3[0], f"logged {i}", self.ts())),
                (ins, ("batch", i + 100, 2, "l", c3[1], f"logged {i}", self.ts())),
                (simple, (1000 + i, f"batched {i}", i, self.ts())),
                (no_cdc, (1000 + i, f"not captured {i}", self.ts())),
            ])  # fmt: skip
        # unlogged: many rows of one partition in one mutation
        execute(
            BatchType.UNLOGGED, [(ins, ("unlogged", 1, ck1, "u", c3[ck1 % 4], "row", self.ts())) for ck1 in range(20)]
        )
        # overlapping range deletes of different timestamps and a row inside them: boundary markers
        t1, t2, t3 = self.ts(), self.ts(), self.ts()
        execute(BatchType.UNLOGGED, [
            (rdel, (t1, "rt", 1, 2, 6)),
            (rdel, (t2, "rt", 1, 4, 9)),
            (rdel, (t1, "rt", 1, 12, 14)),
            (rdel, (t2, "rt", 1, 14, 16)),
            (ins, ("rt", 1, 5, "inside", c3[0], "survives", t3)),
        ])  # fmt: skip
        # one partition update holding a partition deletion, a static row, a deleted row rewritten,
        # a range tombstone and rows written after all of them
        pdel = self.prepare(f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ?")
        rowdel = self.prepare(
            f"DELETE FROM {t} USING TIMESTAMP ? WHERE pk1 = ? AND pk2 = ? AND ck1 = ? AND ck2 = ? AND ck3 = ?"
        )
        stat = self.prepare(f"UPDATE {t} USING TIMESTAMP ? SET s_note = ? WHERE pk1 = ? AND pk2 = ?")
        t0 = self.ts()
        execute(BatchType.UNLOGGED, [
            (pdel, (t0, "mixed", 1)),
            (stat, (self.ts(), "static", "mixed", 1)),
            (rowdel, (self.ts(), "mixed", 1, 1, "a", c3[0])),
            (ins, ("mixed", 1, 1, "a", c3[0], "rewritten", self.ts())),
            (rdel, (self.ts(), "mixed", 1, 3, 5)),
            (ins, ("mixed", 1, 4, "b", c3[1], "after range", self.ts())),
            (ins, ("mixed", 1, 9, "c", c3[1], "older than the partition deletion", t0 - 5)),
        ])  # fmt: skip

    def counters(self) -> None:
        t = f"{KEYSPACE}.counters"
        for i in range(60):
            self.run(f"UPDATE {t} SET hits = hits + ?, misses = misses - ? WHERE pk = ? AND ck = ?",
                     self.rng.randint(1, 2**40), self.rng.randint(-5, 5), f"c{i % 7}", i % 3)  # fmt: skip
        self.run(f"UPDATE {t} SET hits = hits - ? WHERE pk = ? AND ck = ?", 2**62, "c0", 0)
        self.run(f"UPDATE {t} SET misses = misses + ? WHERE pk = ? AND ck = ?", 0, "c1", 0)
        self.session.execute(
            f"BEGIN COUNTER BATCH UPDATE {t} SET hits = hits + 1 WHERE pk = 'cb' AND ck = 1; "
            f"UPDATE {t} SET misses = misses + 2 WHERE pk = 'cb' AND ck = 2; "
            f"UPDATE {t} SET hits = hits + 3 WHERE pk = 'cb2' AND ck = 1; APPLY BATCH"
        )
        self.run(f"DELETE FROM {t} WHERE pk = ? AND ck = ?", "c6", 2)

    def simple_tables(self) -> None:
        ks = KEYSPACE
        for i in range(40):
            self.run(
                f"INSERT INTO {ks}.simple (id, v, n) VALUES (?, ?, ?) USING TIMESTAMP ?",
                i,
                text(self.rng),
                i,
                self.ts(),
            )
            self.run(f"INSERT INTO {ks}.no_cdc (id, v) VALUES (?, ?) USING TIMESTAMP ?", i, text(self.rng), self.ts())
        for i in range(5):
            self.run(f"INSERT INTO {ks}.simple (id, v) VALUES (?, ?) IF NOT EXISTS", 500 + i, "lwt")
        self.run(f"INSERT INTO {ks}.simple (id, v) VALUES (?, ?) IF NOT EXISTS", 500, "lost")
        self.run(f"UPDATE {ks}.simple SET v = ? WHERE id = ? IF v = ?", "cas", 501, "lwt")
        self.run(f"DELETE FROM {ks}.simple WHERE id = ? IF EXISTS", 502)
        self.run(f"DELETE FROM {ks}.simple USING TIMESTAMP ? WHERE id = ?", self.ts(), 3)
        for c in range(5):
            self.run(f"INSERT INTO {ks}.keys_only (k, c) VALUES (?, ?) USING TIMESTAMP ?", "k", c, self.ts())
        self.run(f"INSERT INTO {ks}.keys_only (k, c) VALUES (?, ?) USING TTL ? AND TIMESTAMP ?", "t", 0, 60, self.ts())
        self.run(f"DELETE FROM {ks}.keys_only USING TIMESTAMP ? WHERE k = ? AND c = ?", self.ts(), "k", 1)
        self.run(f"DELETE FROM {ks}.keys_only USING TIMESTAMP ? WHERE k = ? AND c > ?", self.ts(), "k", 3)

    def evolution(self) -> int:
        """ALTER TABLE ADD, DROP (simple, collection and frozen UDT columns) and re-ADD, ALTER TYPE ADD.

        Returns the timestamp of the one cell of the dropped column ``gone`` that is stamped after
        the drop: it must survive in both decodings, while every earlier cell of a dropped column vanishes.
        """
        ks = KEYSPACE
        e = f"{ks}.evolve"
        for i in range(10):
            ts = self.ts()
            self.run(f"INSERT INTO {e} (id, ck, a, b, gone, tags, contact) VALUES (?, ?, ?, ?, ?, ?, ?) "
                     "USING TIMESTAMP ?",
                     i, 0, f"a{i}", i, f"g{i}", {f"t{i}", "x"}, (f"s{i}", "c", i, frozenset({"z"})), ts)  # fmt: skip
            self.run(f"UPDATE {e} USING TIMESTAMP ? SET contact = ?, tags = tags + ? WHERE id = ? AND ck = ?",
                     self.ts(), ("s", "d", None, None), {"y"}, i, 1)  # fmt: skip
            self.run(f"UPDATE {e} USING TIMESTAMP ? SET s_gone = ? WHERE id = ?", self.ts(), f"static {i}", i)
        self.ddl(f"ALTER TABLE {e} ADD c double")
        self.ddl(f"ALTER TABLE {ks}.all_types ADD added_later text")
        for i in range(10):
            self.run(
                f"UPDATE {e} USING TIMESTAMP ? SET c = ?, b = ? WHERE id = ? AND ck = ?", self.ts(), i / 3, -i, i, 2
            )
            self.insert(("evolve", i, i, "", self.ck3_pool[0]), {"added_later": f"new {i}", "c_int": i}, ts=self.ts())
        # a cell stamped after the coming drop: it survives the drop in both decodings
        future = time.time_ns() // 1000 + 3600 * 10**6
        self.run(f"UPDATE {e} USING TIMESTAMP ? SET gone = ? WHERE id = ? AND ck = ?", future, "future", 0, 3)
        for column in ("b", "gone", "s_gone", "tags", "contact"):
            self.ddl(f"ALTER TABLE {e} DROP {column}")
        self.ddl(f"ALTER TABLE {e} ADD b int")
        self.ddl(f"ALTER TYPE {ks}.addr ADD country text")
        for i in range(10):
            self.run(f"UPDATE {e} USING TIMESTAMP ? SET a = ?, b = ?, c = ? WHERE id = ? AND ck = ?",
                     self.ts(), f"after drop {i}", 1000 + i, -i / 7, i, 0)  # fmt: skip
            self.run(f"UPDATE {ks}.all_types USING TIMESTAMP ? SET u_addr.country = ? "
                     "WHERE pk1 = ? AND pk2 = ? AND ck1 = ? AND ck2 = ? AND ck3 = ?",
                     self.ts(), f"country {i}", "evolve", i, i, "", self.ck3_pool[0])  # fmt: skip
        return future

    def bulk(self, rows: int) -> None:
        cql = f"INSERT INTO {KEYSPACE}.bulk (bucket, seq, at, payload, note) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
        batch = [
            (
                i % 17,
                i,
                1_700_000_000_000 + i,
                self.rng.randbytes(self.rng.randint(100, 700)),
                text(self.rng),
                self.ts(),
            )
            for i in range(rows)
        ]
        for start in range(0, rows, 500):  # in steps, so the periodic sync cuts the stream into sections
            self.concurrent(cql, batch[start : start + 500])
            time.sleep(0.25)


# --------------------------------------------------------------------------------------------
# decoding and checks


def run_reference(node: LiveNode, out: Path) -> tuple[list[dict], str]:
    result = subprocess.run(
        [str(JAVA_READER), "dump", str(node.data), str(node.cdc_raw), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"java reader failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return [line for line in lines if line["keyspace"] == KEYSPACE], result.stdout + result.stderr


def run_cdcfast(schema: Path, cdc_raw: Path, out: Path) -> tuple[list[dict], str]:
    command = [sys.executable, "-m", "cdcfast.cli", "inspect", "--format", "reference", "--schema", str(schema)]
    with out.open("wb") as sink:
        result = subprocess.run([*command, str(cdc_raw)], stdout=sink, stderr=subprocess.PIPE, text=False, timeout=600)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"cdcfast inspect failed ({result.returncode}):\n{stderr[-4000:]}"
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    return [line for line in lines if line["keyspace"] == KEYSPACE], stderr


def timestamps(line: dict) -> set[int]:
    found: set[int] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "ts" and isinstance(v, int):
                    found.add(v)
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(line)
    return found


def statements_behind(line: dict | None, ops: list[dict]) -> str:
    """The logged statements whose bound USING TIMESTAMP appears in a partition update."""
    if line is None:
        return ""
    stamps = timestamps(line)

    def bound(values: Iterable) -> bool:
        for v in values:
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], tuple):  # a batch entry
                if bound(v[1]):
                    return True
            elif isinstance(v, int) and not isinstance(v, bool) and v in stamps:
                return True
        return False

    hits = [op for op in ops if bound(op["values"])]
    shown = "\n".join(f"  {op['cql']}  {str(op['values'])[:300]}" for op in hits[:10])
    return f"\nstatements with a timestamp of that partition update:\n{shown}" if hits else ""


def mismatch_report(mine: list[dict], reference: list[dict], ops: list[dict]) -> str:
    """The first difference, where it is, and the statements that wrote it."""
    index = next((i for i, (a, b) in enumerate(zip(mine, reference)) if a != b), min(len(mine), len(reference)))
    culprit = reference[index] if index < len(reference) else mine[index] if index < len(mine) else None
    where = f"segment {culprit['segment']} position {culprit['position']}, {culprit['table']}: " if culprit else ""
    return where + readable_diff(mine, reference) + statements_behind(culprit, ops)


def sync_sections(segment: Path) -> int:
    """Sync sections in a segment: follow the sync markers' next-marker offsets from the header on."""
    data = segment.read_bytes()
    if len(data) < 14:
        return 0
    (params_len,) = struct.unpack_from(">H", data, 12)
    position, sections = 4 + 8 + 2 + params_len + 4, 0
    while position + 8 <= len(data):
        (following,) = struct.unpack_from(">i", data, position)
        if following <= position or following > len(data):
            break
        sections += 1
        position = following
    return sections


def features(lines: list[dict]) -> Counter:
    """What the decoded stream holds, to check that the workload produced every kind of change."""
    seen: Counter = Counter()
    mutations: Counter = Counter()
    for line in lines:
        seen[f"table {line['table']}"] += 1
        seen[f"cdc={line['cdc']}"] += 1
        mutations[line["segment"], line["position"]] += 1
        seen["partition deletion"] += "partition_deletion" in line
        seen["static row"] += "static" in line
        rows = [line["static"]] if "static" in line else []
        for row in line["rows"]:
            if row["kind"] != "row":
                seen[row["kind"]] += 1
                continue
            rows.append(row)
            seen["row deletion"] += "deletion" in row
            seen["expiring liveness"] += row.get("liveness", {}).get("ttl", 0) > 0
        for row in rows:
            for cell in row["cells"]:
                if "complex_deletion" in cell:
                    seen["complex deletion"] += 1
                    continue
                seen[f"type {cell['type']}"] += 1
                seen["tombstone"] += cell.get("tombstone", False)
                seen["expiring cell"] += "ttl" in cell
                seen["counter"] += cell.get("counter", False)
                seen["cell path"] += "path" in cell
    seen["mutation with several partition updates"] = sum(1 for n in mutations.values() if n > 1)
    return seen


EXPECTED_FEATURES = [
    "partition deletion", "static row", "rt_bound", "rt_boundary", "row deletion", "expiring liveness",
    "complex deletion", "tombstone", "expiring cell", "counter", "cell path", "cdc=False",
    "mutation with several partition updates", "table counters", "table simple", "table no_cdc",
    "table keys_only", "table evolve", "table bulk", "table clust", "table wide",
    "type vector<float, 3>", "type duration", "type addr",
]  # fmt: skip


def assert_live_schema_matches(node: LiveNode, schema_file: Path) -> None:
    """The schema read from the live node (cassandra://) is the one dumped to a file."""
    from cdcfast.commitlog import load_schema

    live = load_schema(schema_uri(node))
    filed = load_schema(schema_file)
    mine = {i: t for i, t in live.tables.items() if t.keyspace == KEYSPACE}
    assert mine.keys() == filed.tables.keys()
    for table_id, table in filed.tables.items():
        other = mine[table_id]
        assert (other.name, other.cdc, other.partition_key, other.clustering, other.columns, other.dropped) == (
            table.name, table.cdc, table.partition_key, table.clustering, table.columns, table.dropped
        ), table.qualified_name


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_live_segments_decode_like_cassandra(setup: NodeSetup, tmp_path: Path) -> None:
    started = time.monotonic()
    schema_file = tmp_path / "schema.json"
    with cassandra_node(tmp_path / "node", setup) as node:
        work = Workload(node.session, seed=zlib.crc32(setup.name.encode()))
        work.schema()
        work.extremes()
        work.random_rows(1500)
        work.changes()
        work.batches()
        work.random_batches(300)
        work.clustering(60)
        work.wide()
        work.max_ttl()
        work.extreme_timestamps()
        work.counters()
        work.simple_tables()
        future_ts = work.evolution()
        work.bulk(3000)
        node.dump_schema(KEYSPACE, schema_file)
        assert_live_schema_matches(node, schema_file)
        (tmp_path / "ops.jsonl").write_text("\n".join(json.dumps(op, default=repr) for op in work.ops))
        node.stop()
    workload_done = time.monotonic()

    reference, java_output = run_reference(node, tmp_path / "reference.jsonl")
    mine, cdcfast_stderr = run_cdcfast(schema_file, node.cdc_raw, tmp_path / "cdcfast.jsonl")
    print(
        f"{setup.name}: node and workload {workload_done - started:.0f} s, "
        f"decoding {time.monotonic() - workload_done:.0f} s, "
        f"{len(reference)} partition updates; java reader: {java_output.strip()}"
    )

    # the workload did what it claims, as Cassandra's own reader sees it
    assert len(reference) > 1000, f"only {len(reference)} partition updates of {KEYSPACE}"
    seen = features(reference)
    missing = [f for f in EXPECTED_FEATURES if not seen[f]]
    assert not missing, f"workload produced no {missing}; saw {dict(seen)}"
    segments = sorted(node.cdc_raw.glob("CommitLog-*.log"))
    used = {line["segment"] for line in reference}
    assert len(used) >= 2, f"the workload should span several segments, used {used}"
    sections = sum(sync_sections(s) for s in segments)
    assert sections >= 5, f"only {sections} sync sections in {[s.name for s in segments]}"
    schema = json.loads(schema_file.read_text())
    dropped = {(d["table_name"], d["column_name"]) for d in schema["dropped_columns"]}
    assert {("evolve", c) for c in ("gone", "s_gone", "tags", "contact")} <= dropped, dropped

    # cdcfast decodes it exactly as Cassandra does
    if mine != reference:
        pytest.fail(
            f"{setup.name}: {mismatch_report(mine, reference, work.ops)}\n"
            f"cdcfast stderr: {cdcfast_stderr[-2000:]}\n"
            f"files (reference.jsonl, cdcfast.jsonl, ops.jsonl) in {tmp_path}",
            pytrace=False,
        )

    # the segment format is the one the setup implies
    versions = {(line["version"], line["messaging_version"]) for line in mine}
    assert versions == {(setup.descriptor_version, setup.messaging_version)}, versions
    # cells of a dropped column written before its drop are gone (the one stamped after it stays)
    for line in mine:
        if line["table"] != "evolve":
            continue
        for row in line["rows"] + ([line["static"]] if "static" in line else []):
            for cell in row.get("cells", []):
                assert cell["col"] not in ("s_gone", "tags", "contact"), f"dropped column's cell decoded: {cell}"
                assert cell["col"] != "gone" or cell["ts"] == future_ts, f"dropped column's cell decoded: {cell}"
    gone = [c for line in mine if line["table"] == "evolve" for r in line["rows"] for c in r.get("cells", [])
            if c["col"] == "gone"]  # fmt: skip
    assert len(gone) == 1, gone
    for name in ("reference.jsonl", "cdcfast.jsonl", "ops.jsonl"):
        (tmp_path / name).unlink()
