"""The registry: CQL type kind -> codec, and the two dispatchers every caller goes through.

Adding a type means one entry in one family module; this file only merges their ``CODECS``.
"""

from __future__ import annotations

from typing import Any

from cdcfast.commitlog.cqltypes import CqlType
from cdcfast.values import collections, counter, identity, numeric, scalars, temporal
from cdcfast.values.codec import EMPTY, Buffer, Codec
from cdcfast.values.errors import ValueDecodeError, ValueEncodeError

CODECS: dict[str, Codec] = {
    **scalars.CODECS,
    **numeric.CODECS,
    **temporal.CODECS,
    **identity.CODECS,
    **counter.CODECS,
    **collections.CODECS,
}


def decode(ctype: CqlType, data: Buffer) -> Any:
    """The Python value of the serialized bytes of a ``ctype`` value.

    Zero bytes give :data:`EMPTY`, except for ``text``/``ascii`` (``""``), ``blob`` and custom types (``b""``).
    """
    codec = CODECS.get(ctype.kind)
    if codec is None:
        raise ValueDecodeError(ctype.cql(), len(data), f"no codec for CQL type kind {ctype.kind!r}")
    raw = data if isinstance(data, bytes) else bytes(data)
    if not raw and not codec.empty_is_value:
        return EMPTY
    return codec.decode(ctype, raw)


def encode(ctype: CqlType, value: Any) -> bytes:
    """The serialized bytes of ``value`` as a ``ctype`` value (the inverse of :func:`decode`)."""
    codec = CODECS.get(ctype.kind)
    if codec is None:
        raise ValueEncodeError(ctype.cql(), f"no codec for CQL type kind {ctype.kind!r}")
    if value is EMPTY:
        return b""
    return codec.encode(ctype, value)
