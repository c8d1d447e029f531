"""Value codecs: round trips for every CQL type, canonical bytes, EMPTY, errors, cell helpers."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcfast.commitlog.cqltypes import CqlType, parse_cql_type
from cdcfast.errors import CdcfastError
from cdcfast.values import (
    EMPTY,
    CounterContext,
    CounterShard,
    Duration,
    ValueDecodeError,
    ValueEncodeError,
    decode,
    decode_cell_path,
    decode_cell_value,
    encode,
)
from cdcfast.values.temporal import (
    date_to_days,
    datetime_to_millis,
    days_to_date,
    millis_to_datetime,
    nanos_to_time,
)

UDTS = {
    "addr": (("street", "city", "zip"), ("text", "text", "int")),
    "addr2": (("street", "city"), ("text", "text")),  # addr as it was before `ALTER TYPE addr ADD zip`
    "holder": (("id", "where", "tags"), ("uuid", "frozen<addr>", "frozen<list<text>>")),
}


def t(text: str) -> CqlType:
    return parse_cql_type(text, UDTS)


I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)


def decimals() -> st.SearchStrategy[Decimal]:
    def build(unscaled: int, scale: int) -> Decimal:
        digits = tuple(int(c) for c in str(abs(unscaled)))
        return Decimal((1 if unscaled < 0 else 0, digits, -scale))

    return st.builds(build, st.integers(-(10**40), 10**40) | st.integers(-5, 5), I32 | st.integers(-3, 12))


def counters() -> st.SearchStrategy[CounterContext]:
    shard = st.builds(CounterShard, st.uuids(), I64, I64)

    @st.composite
    def build(draw: st.DrawFn) -> CounterContext:
        shards = tuple(draw(st.lists(shard, max_size=4)))
        indexes = draw(st.lists(st.sampled_from(range(len(shards))), unique=True)) if shards else []
        header = tuple(i - 32768 if draw(st.booleans()) else i for i in sorted(indexes))
        negative = draw(st.booleans()) and bool(header)
        return CounterContext(shards=shards, header=header, negative_header=negative)

    return build()


def values(ctype: CqlType) -> st.SearchStrategy[Any]:
    """Python values of a CQL type, in the shapes ``decode`` returns."""
    k = ctype.kind
    scalar: dict[str, st.SearchStrategy[Any]] = {
        "ascii": st.text(st.characters(max_codepoint=127)),
        "text": st.text(st.characters(codec="utf-8")),
        "blob": st.binary(),
        "boolean": st.booleans(),
        "tinyint": st.integers(-128, 127),
        "smallint": st.integers(-32768, 32767),
        "int": I32,
        "bigint": I64,
        "counter": counters(),
        "float": st.floats(width=32),
        "double": st.floats(),
        "varint": st.integers() | st.integers(-(2**300), 2**300) | st.sampled_from([0, -1, 127, 128, -128, -129]),
        "decimal": decimals(),
        "timestamp": I64,
        "date": I32,
        "time": st.integers(0, 86_400 * 10**9 - 1),
        "uuid": st.uuids(),
        "timeuuid": st.uuids(version=1),
        "inet": st.ip_addresses(),
        "duration": st.builds(Duration, I32, I32, I64),
        "custom": st.binary(),
    }
    if k in scalar:
        return scalar[k]
    if k == "empty":
        return st.just(EMPTY)
    p = ctype.params
    if k in ("list", "set"):
        return st.lists(values(p[0]), max_size=5)
    if k == "map":
        return st.lists(st.tuples(values(p[0]), values(p[1])), max_size=5)
    if k == "tuple":
        return st.tuples(*(values(x) | st.none() for x in p))
    if k == "udt":
        fields = st.fixed_dictionaries({n: values(x) | st.none() for n, x in zip(ctype.field_names, p)})
        return fields.map(lambda d: {n: d[n] for n in ctype.field_names})  # declaration order
    if k == "vector":
        return st.lists(values(p[0]), min_size=ctype.dimension, max_size=ctype.dimension)
    raise AssertionError(f"no strategy for {ctype}")


def canon(value: Any) -> Any:
    """A comparable form: floats by bit pattern (NaN, -0.0), decimals by (sign, digits, exponent)."""
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, bool | int):
        return (type(value).__name__, value)
    if isinstance(value, list):
        return ["list", *(canon(v) for v in value)]
    if isinstance(value, tuple):
        return ("tuple", *(canon(v) for v in value))
    if isinstance(value, dict):
        return ("dict", [(k, canon(v)) for k, v in value.items()])
    return value


SCALAR_TYPES = [
    "ascii",
    "text",
    "varchar",
    "blob",
    "boolean",
    "tinyint",
    "smallint",
    "int",
    "bigint",
    "float",
    "double",
    "varint",
    "decimal",
    "timestamp",
    "date",
    "time",
    "uuid",
    "timeuuid",
    "inet",
    "duration",
    "counter",
    "'org.apache.cassandra.db.marshal.LexicalUUIDType'",
]
COMPOSITE_TYPES = [
    "list<int>",
    "set<text>",
    "map<text, int>",
    "frozen<list<text>>",
    "frozen<set<int>>",
    "frozen<map<int, text>>",
    "list<frozen<tuple<text, int, decimal>>>",
    "frozen<map<text, frozen<list<int>>>>",
    "tuple<int, text, double>",
    "tuple<duration, inet, varint, frozen<set<timeuuid>>, float>",
    "frozen<addr>",
    "addr",
    "frozen<holder>",
    "frozen<map<frozen<tuple<int, text>>, frozen<addr>>>",
    "vector<float, 3>",
    "vector<text, 2>",
    "vector<smallint, 4>",  # smallint is prefixed on the wire, so vector elements carry uvint lengths
    "vector<double, 1>",
    "vector<frozen<list<int>>, 2>",
    "frozen<list<vector<int, 2>>>",
    "frozen<list<blob>>",
]


@pytest.mark.parametrize("type_text", SCALAR_TYPES + COMPOSITE_TYPES)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(type_text: str, data: st.DataObject) -> None:
    ctype = t(type_text)
    value = data.draw(values(ctype))
    encoded = encode(ctype, value)
    assert isinstance(encoded, bytes)
    decoded = decode(ctype, encoded)
    assert canon(decoded) == canon(value)
    # and the bytes are stable: re-encoding the decoded value gives them back
    assert encode(ctype, decoded) == encoded


def canonical_varint(n: int) -> bytes:
    # Java BigInteger.toByteArray: minimal two's complement, big-endian
    return n.to_bytes((n.bit_length() + 8) // 8 if n >= 0 else ((~n).bit_length() + 8) // 8, "big", signed=True)


def _is_signaling_nan32(b: bytes) -> bool:
    bits = int.from_bytes(b, "big")
    return (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF != 0 and not bits & 0x400000


def _timeuuid_bytes(b: bytes) -> bytes:
    return b[:6] + bytes([(b[6] & 0x0F) | 0x10]) + b[7:]


CANONICAL: dict[str, st.SearchStrategy[bytes]] = {
    "ascii": st.binary().map(lambda b: bytes(x & 0x7F for x in b)),
    "text": st.text(st.characters(codec="utf-8")).map(lambda s: s.encode()),
    "blob": st.binary(),
    "boolean": st.sampled_from([b"\x00", b"\x01"]),
    "tinyint": st.binary(min_size=1, max_size=1),
    "smallint": st.binary(min_size=2, max_size=2),
    "int": st.binary(min_size=4, max_size=4),
    "bigint": st.binary(min_size=8, max_size=8),
    "float": st.binary(min_size=4, max_size=4).filter(lambda b: not _is_signaling_nan32(b)),
    "double": st.binary(min_size=8, max_size=8),
    "varint": st.integers(-(2**200), 2**200).map(canonical_varint),
    "decimal": st.tuples(st.binary(min_size=4, max_size=4), st.integers(-(2**100), 2**100)).map(
        lambda p: p[0] + canonical_varint(p[1])
    ),
    "timestamp": st.binary(min_size=8, max_size=8),
    "date": st.binary(min_size=4, max_size=4),
    "time": st.integers(0, 86_400 * 10**9 - 1).map(lambda n: n.to_bytes(8, "big")),
    "uuid": st.binary(min_size=16, max_size=16),
    "timeuuid": st.binary(min_size=16, max_size=16).map(_timeuuid_bytes),
    "inet": st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
    "'com.example.Custom'": st.binary(),
}


@pytest.mark.parametrize("type_text", sorted(CANONICAL))
@given(data=st.data())
def test_canonical_bytes_survive_decode_encode(type_text: str, data: st.DataObject) -> None:
    ctype = t(type_text)
    raw = data.draw(CANONICAL[type_text])
    assert encode(ctype, decode(ctype, raw)) == raw


# -- fixed examples, each written out by hand from the format reference ---------------------------


@pytest.mark.parametrize(
    ("type_text", "hex_bytes", "expected"),
    [
        ("boolean", "00", False),
        ("boolean", "01", True),
        ("boolean", "7f", True),  # anything but 0x00 is true
        ("int", "ffffffff", -1),
        ("bigint", "8000000000000000", -(2**63)),
        ("smallint", "bf93", -16493),
        ("tinyint", "80", -128),
        ("float", "40500000", 3.25),
        ("double", "fff0000000000000", -math.inf),
        ("varint", "00", 0),
        ("varint", "ff", -1),
        ("varint", "0080", 128),
        ("varint", "ff7f", -129),
        ("varint", "000001", 1),  # not minimal, still accepted
        ("decimal", "0000000204d2", Decimal("12.34")),
        ("decimal", "fffffffeff", Decimal("-1E+2")),
        ("decimal", "0000000300", Decimal("0.000")),
        ("timestamp", "ffffffffffffffff", -1),
        ("date", "80000000", 0),
        ("date", "00000000", -(2**31)),
        ("date", "ffffffff", 2**31 - 1),
        ("time", "0000000000000001", 1),
        ("uuid", "98af0bba839e4cf8894e4330ec50c6ab", uuid.UUID("98af0bba-839e-4cf8-894e-4330ec50c6ab")),
        ("inet", "7f000001", ipaddress.IPv4Address("127.0.0.1")),
        ("inet", "00000000000000000000000000000001", ipaddress.IPv6Address("::1")),
        ("inet", "00000000000000000000ffff7f000001", ipaddress.IPv6Address("::ffff:127.0.0.1")),
        ("duration", "020406", Duration(1, 2, 3)),
        ("duration", "010305", Duration(-1, -2, -3)),
        ("frozen<list<int>>", "000000020000000400000001ffffffff", [1, None]),
        ("frozen<set<text>>", "0000000200000001620000000161", ["b", "a"]),
        ("frozen<map<text, int>>", "00000001000000016b0000000400000007", [("k", 7)]),
        ("frozen<list<int>>", "00000000", []),
        ("frozen<list<int>>", "0000000100000000", [EMPTY]),
        ("tuple<int, text>", "0000000400000009ffffffff", (9, None)),
        ("tuple<int, text>", "0000000400000009", (9, None)),  # missing trailing field
        ("tuple<int, text>", "", EMPTY),
        ("frozen<addr>", "0000000161", {"street": "a", "city": None, "zip": None}),
        ("vector<int, 2>", "0000000100000002", [1, 2]),
        ("vector<text, 2>", "016100", ["a", ""]),
        ("vector<smallint, 2>", "02000102ffff", [1, -1]),
        ("'com.example.Custom'", "0102", b"\x01\x02"),
    ],
)
def test_known_bytes(type_text: str, hex_bytes: str, expected: Any) -> None:
    assert canon(decode(t(type_text), bytes.fromhex(hex_bytes))) == canon(expected)


def test_decimal_keeps_scale_and_trailing_zeros() -> None:
    value = decode(t("decimal"), bytes.fromhex("000000043039"))  # 12345, scale 4
    assert str(value) == "1.2345"
    value = decode(t("decimal"), bytes.fromhex("0000000400"))
    assert value.as_tuple() == Decimal("0.0000").as_tuple()


def test_float_special_values_keep_their_bits() -> None:
    for hex_bytes in ("80000000", "7fc00000", "7f800000", "ff800000", "00000001"):
        raw = bytes.fromhex(hex_bytes)
        assert encode(t("float"), decode(t("float"), raw)) == raw
    for hex_bytes in ("8000000000000000", "7ff8000000000000", "7ff0000000000001", "fff8000000000123"):
        raw = bytes.fromhex(hex_bytes)
        assert encode(t("double"), decode(t("double"), raw)) == raw
    assert math.copysign(1.0, decode(t("double"), bytes.fromhex("8000000000000000"))) == -1.0


def test_sets_and_maps_keep_stored_order() -> None:
    raw = encode(t("frozen<set<int>>"), [3, 1, 2])
    assert decode(t("frozen<set<int>>"), raw) == [3, 1, 2]
    raw = encode(t("frozen<map<int, text>>"), [(2, "b"), (1, "a")])
    assert decode(t("frozen<map<int, text>>"), raw) == [(2, "b"), (1, "a")]
    # a dict is accepted by the encoder (in its iteration order)
    assert encode(t("frozen<map<int, text>>"), {2: "b", 1: "a"}) == raw


def test_python_sets_are_encoded_deterministically() -> None:
    a = encode(t("frozen<set<text>>"), {"x", "a", "m"})
    b = encode(t("frozen<set<text>>"), frozenset({"m", "x", "a"}))
    assert a == b
    assert decode(t("frozen<set<text>>"), a) == ["a", "m", "x"]


def test_set_of_unhashable_elements() -> None:
    ctype = t("frozen<set<frozen<list<int>>>>")
    assert decode(ctype, encode(ctype, [[1], [1, 2]])) == [[1], [1, 2]]


# -- EMPTY --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_text",
    [x for x in SCALAR_TYPES if x not in ("ascii", "text", "varchar", "blob") and not x.startswith("'")]
    + [
        "frozen<list<int>>",
        "frozen<map<int, int>>",
        "tuple<int>",
        "frozen<addr>",
        "vector<float, 3>",
        "vector<text, 2>",
    ],
)
def test_empty_value_is_the_empty_singleton(type_text: str) -> None:
    ctype = t(type_text)
    assert decode(ctype, b"") is EMPTY
    assert encode(ctype, EMPTY) == b""


def test_empty_for_string_types_is_the_empty_string() -> None:
    assert decode(t("text"), b"") == ""
    assert decode(t("ascii"), b"") == ""
    assert decode(t("blob"), b"") == b""
    assert decode(t("'com.example.Custom'"), b"") == b""


def test_empty_singleton_behaviour() -> None:
    import copy
    import pickle

    assert not EMPTY
    assert repr(EMPTY) == "EMPTY"
    assert copy.deepcopy(EMPTY) is EMPTY
    assert pickle.loads(pickle.dumps(EMPTY)) is EMPTY
    assert EMPTY is not None


def test_empty_elements_inside_collections() -> None:
    ctype = t("frozen<map<int, text>>")
    assert decode(ctype, encode(ctype, [(EMPTY, "")])) == [(EMPTY, "")]


def test_accepts_memoryview_and_bytearray() -> None:
    assert decode(t("int"), memoryview(b"\x00\x00\x00\x05")) == 5
    assert decode(t("text"), bytearray(b"hi")) == "hi"


# -- counters -----------------------------------------------------------------------------------


def test_counter_context_from_reference_layout() -> None:
    # h = 1, header [-32768] (shard 0 is global), one shard: id, clock 0x0102, count 5
    raw = bytes.fromhex("00018000634cede999b94883bb961ecc0ccc606900000000000001020000000000000005")
    ctx = decode(t("counter"), raw)
    assert isinstance(ctx, CounterContext)
    assert ctx.shards == (CounterShard(uuid.UUID("634cede9-99b9-4883-bb96-1ecc0ccc6069"), 0x0102, 5),)
    assert ctx.shards[0] == (uuid.UUID("634cede9-99b9-4883-bb96-1ecc0ccc6069"), 0x0102, 5)
    assert ctx.global_indexes == frozenset({0})
    assert ctx.local_indexes == frozenset()
    assert ctx.shard_kind(0) == "global"
    assert ctx.total() == 5
    assert encode(t("counter"), ctx) == raw
    assert encode(t("counter"), CounterContext.single(uuid.UUID(int=7), 1, 5)) == bytes.fromhex(
        "00018000" + "00" * 15 + "0700000000000000010000000000000005"
    )


def test_counter_legacy_header() -> None:
    shard = "00" * 16 + "0000000000000001" + "fffffffffffffffe"  # count -2
    raw = bytes.fromhex("fffe00000001" + shard + shard + shard)  # h = -2: two local shards listed
    ctx = decode(t("counter"), raw)
    assert ctx.negative_header
    assert ctx.local_indexes == frozenset({0, 1})
    assert ctx.shard_kind(2) == "remote"
    assert ctx.total() == -6
    assert encode(t("counter"), ctx) == raw


@pytest.mark.parametrize(
    ("hex_bytes", "problem"),
    [
        ("00", "header"),
        ("00028000", "header"),
        ("0000" + "00" * 31, "32"),
        ("00018001" + "00" * 32, "index"),
    ],
)
def test_bad_counter_contexts(hex_bytes: str, problem: str) -> None:
    with pytest.raises(ValueDecodeError, match=problem):
        decode(t("counter"), bytes.fromhex(hex_bytes))


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_text", "hex_bytes", "fragments"),
    [
        ("int", "000000", ["int", "3 bytes"]),
        ("bigint", "00", ["bigint", "1 byte"]),
        ("boolean", "0001", ["boolean", "2 bytes"]),
        ("smallint", "000000", ["smallint"]),
        ("tinyint", "0000", ["tinyint"]),
        ("uuid", "00", ["uuid"]),
        ("inet", "0000000000", ["inet", "5 bytes"]),
        ("text", "ff", ["text", "UTF-8"]),
        ("ascii", "80", ["ascii"]),
        ("date", "000000", ["date"]),
        ("decimal", "000000", ["decimal"]),
        ("duration", "0204", ["duration"]),
        ("duration", "02040600", ["duration", "trailing"]),
        ("duration", "ff00000001000000000000", ["duration", "months"]),
        ("frozen<list<int>>", "000000", ["frozen<list<int>>"]),
        ("frozen<list<int>>", "0000000100000004000000", ["frozen<list<int>>", "element 0", "offset 8"]),
        ("frozen<list<int>>", "0000000100000003000000", ["frozen<list<int>>", "element 0", "int", "3 bytes"]),
        ("frozen<list<int>>", "ffffffff", ["frozen<list<int>>", "count"]),
        ("frozen<list<int>>", "0000000000", ["trailing"]),
        ("frozen<map<int, int>>", "000000010000000400000001", ["frozen<map<int, int>>", "value 0"]),
        ("tuple<int>", "000000040000000100000000", ["tuple<int>", "trailing"]),
        ("frozen<addr>", "000000016100000002", ["frozen<addr>", "city"]),
        ("vector<float, 3>", "0000000000000000", ["vector<float, 3>", "8 bytes", "12"]),
        ("vector<text, 2>", "0161", ["vector<text, 2>", "element 1"]),
        ("vector<text, 1>", "016100", ["vector<text, 1>", "trailing"]),
        ("frozen<list<frozen<list<int>>>>", "00000001000000080000000100000004", ["element 0", "element 0"]),
    ],
)
def test_decode_errors_name_the_type_and_the_problem(type_text: str, hex_bytes: str, fragments: list[str]) -> None:
    with pytest.raises(ValueDecodeError) as info:
        decode(t(type_text), bytes.fromhex(hex_bytes))
    assert isinstance(info.value, CdcfastError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("type_text", "value"),
    [
        ("int", 2**31),
        ("int", "1"),
        ("int", True),
        ("tinyint", 128),
        ("bigint", 1.5),
        ("boolean", 1),
        ("float", 1e300),
        ("double", "x"),
        ("text", "\udc80"),
        ("ascii", "é"),
        ("blob", "text"),
        ("decimal", Decimal("NaN")),
        ("decimal", 1.5),
        ("date", 2**31),
        ("timestamp", 2**63),
        ("timeuuid", uuid.UUID("98af0bba-839e-4cf8-894e-4330ec50c6ab")),  # version 4, not 1
        ("uuid", "98af0bba-839e-4cf8-894e-4330ec50c6ab"),
        ("inet", "127.0.0.1"),
        ("duration", Duration(2**31, 0, 0)),
        ("duration", (1, 2, 3)),
        ("counter", 5),
        ("frozen<list<int>>", 5),
        ("frozen<list<int>>", ["a"]),
        ("tuple<int, int>", (1,)),
        ("frozen<addr>", {"nope": 1}),
        ("vector<float, 3>", [1.0, 2.0]),
        ("vector<float, 2>", [1.0, None]),
        ("vector<float, 2>", [1.0, EMPTY]),
        ("empty", 1),
    ],
)
def test_encode_errors(type_text: str, value: Any) -> None:
    with pytest.raises(ValueEncodeError) as info:
        encode(t(type_text), value)
    assert isinstance(info.value, CdcfastError)
    assert t(type_text).cql() in str(info.value)


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueDecodeError, match="no codec"):
        decode(CqlType("nonsense"), b"\x00")
    with pytest.raises(ValueEncodeError, match="no codec"):
        encode(CqlType("nonsense"), 1)


@given(st.sampled_from(SCALAR_TYPES + COMPOSITE_TYPES), st.binary(max_size=40))
@settings(max_examples=400)
def test_garbage_raises_only_value_decode_error(type_text: str, raw: bytes) -> None:
    try:
        decode(t(type_text), raw)
    except ValueDecodeError:
        pass


# -- UDTs that gained fields ----------------------------------------------------------------------


@given(st.data())
def test_udt_missing_trailing_fields_decode_as_none(data: st.DataObject) -> None:
    old, new = t("frozen<addr2>"), t("frozen<addr>")
    value = data.draw(values(old))
    decoded = decode(new, encode(old, value))
    assert decoded == {**value, "zip": None}
    assert list(decoded) == ["street", "city", "zip"]


def test_tuple_missing_trailing_fields() -> None:
    raw = encode(t("tuple<int, text>"), (1, "a"))
    assert decode(t("tuple<int, text, double, int>"), raw) == (1, "a", None, None)


def test_udt_encoder_treats_missing_keys_as_null() -> None:
    ctype = t("frozen<addr>")
    assert decode(ctype, encode(ctype, {"city": "Oslo"})) == {"street": None, "city": "Oslo", "zip": None}


# -- cell paths and values of multi-cell columns --------------------------------------------------


def test_list_cells() -> None:
    ctype = t("list<int>")
    path = bytes.fromhex("aa8f9ee0e95f11f1833cab6ebb85193f")
    assert decode_cell_path(ctype, path) == uuid.UUID("aa8f9ee0-e95f-11f1-833c-ab6ebb85193f")
    assert decode_cell_value(ctype, bytes.fromhex("fffffffd")) == -3


def test_set_cells() -> None:
    ctype = t("set<text>")
    assert decode_cell_path(ctype, b"gift") == "gift"
    assert decode_cell_value(ctype, b"") is None
    with pytest.raises(ValueDecodeError, match="set"):
        decode_cell_value(ctype, b"x")


def test_map_cells() -> None:
    ctype = t("map<text, frozen<list<int>>>")
    assert decode_cell_path(ctype, b"k") == "k"
    assert decode_cell_value(ctype, encode(t("frozen<list<int>>"), [1, 2])) == [1, 2]


def test_udt_cells() -> None:
    ctype = t("addr")  # not frozen: one cell per field
    assert decode_cell_path(ctype, b"\x00\x01") == "city"
    assert decode_cell_path(ctype, b"\x00\x02") == "zip"
    assert decode_cell_value(ctype, b"Oslo", path=b"\x00\x01") == "Oslo"
    assert decode_cell_value(ctype, b"\x00\x00\x00\x07", path=b"\x00\x02") == 7
    with pytest.raises(ValueDecodeError, match="path"):
        decode_cell_value(ctype, b"Oslo")
    with pytest.raises(ValueDecodeError, match="field index 3"):
        decode_cell_path(ctype, b"\x00\x03")
    with pytest.raises(ValueDecodeError, match="2 bytes"):
        decode_cell_path(ctype, b"\x01")


def test_cell_helpers_on_simple_and_frozen_columns() -> None:
    assert decode_cell_value(t("int"), b"\x00\x00\x00\x02") == 2
    assert decode_cell_value(t("frozen<list<int>>"), encode(t("frozen<list<int>>"), [4])) == [4]
    with pytest.raises(ValueDecodeError, match="multi-cell"):
        decode_cell_path(t("frozen<list<int>>"), b"\x00")
    with pytest.raises(ValueDecodeError, match="multi-cell"):
        decode_cell_path(t("int"), b"\x00")


def test_list_cell_path_must_be_a_timeuuid() -> None:
    with pytest.raises(ValueDecodeError, match="16"):
        decode_cell_path(t("list<int>"), b"\x00" * 4)


# -- temporal helpers ---------------------------------------------------------------------------

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@given(st.integers(-62135596800000, 253402300799999))
def test_millis_to_datetime_in_range(ms: int) -> None:
    expected = EPOCH + dt.timedelta(milliseconds=ms)
    assert millis_to_datetime(ms) == expected
    assert datetime_to_millis(expected) == ms


@pytest.mark.parametrize("ms", [-(2**63), 2**63 - 1, -62135596800001, 253402300800000])
def test_millis_to_datetime_out_of_range(ms: int) -> None:
    assert millis_to_datetime(ms) is None


@given(st.integers(-719162, 2932896))
def test_days_to_date_in_range(days: int) -> None:
    expected = dt.date(1970, 1, 1) + dt.timedelta(days=days)
    assert days_to_date(days) == expected
    assert date_to_days(expected) == days


@pytest.mark.parametrize("days", [-(2**31), 2**31 - 1, -719163, 2932897])
def test_days_to_date_out_of_range(days: int) -> None:
    assert days_to_date(days) is None


def test_nanos_to_time() -> None:
    assert nanos_to_time(0) == dt.time(0)
    assert nanos_to_time(86_399_999_999_999) == dt.time(23, 59, 59, 999_999)  # truncated to microseconds
    assert nanos_to_time(86_400 * 10**9) is None
    assert nanos_to_time(-1) is None


def test_datetime_to_millis_naive_is_utc() -> None:
    assert datetime_to_millis(dt.datetime(1970, 1, 1, 0, 0, 1)) == 1000
    assert datetime_to_millis(dt.datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=dt.timezone.utc)) == -1


def test_duration_is_immutable_and_hashable() -> None:
    d = Duration(1, 2, 3)
    assert d == Duration(months=1, days=2, nanoseconds=3)
    assert hash(d) == hash(Duration(1, 2, 3))
    with pytest.raises(AttributeError):
        d.months = 5  # type: ignore[misc]
