"""What a sink error means for the pipeline, decided from what the drivers raise.

- TRANSIENT: the sink is briefly unavailable (connection refused or cut, timeouts, too many
  connections, a serialization failure, ClickHouse's memory limit, other writers racing). Retry with
  backoff; the batch is applied again, which is safe because every write is idempotent.
- PERMANENT: the sink cannot be written until an operator acts (authentication, privileges, a missing
  database, or anything not understood). The sink stops with the reason; other sinks go on.
- POISON: one value cannot be stored (out of range for the column, a constraint, too big for an index
  row, beyond what the driver can send). Such events belong in the dead-letter queue; the rest of the
  batch can go on: the writer finds them by applying parts of the batch (docs/failures.md).
  Only errors about the data itself are poison: an authentication, privilege or missing-object error
  fails every event alike, so it stays PERMANENT and stops the sink instead of filling its queue.
"""

from __future__ import annotations

import enum

import asyncpg
from clickhouse_driver import errors as ch_errors


class WritersKeptRacing(Exception):
    """Other nodes' writers kept changing the rows of a batch while this writer settled them
    (cdcfast.sinks.clickhouse_versions): transient, the batch is applied again after a backoff."""


class ErrorClass(str, enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    POISON = "poison"


# PostgreSQL SQLSTATE classes (the first two characters), https://www.postgresql.org/docs/15/errcodes-appendix.html
_PG_TRANSIENT_CLASSES = {
    "08",  # connection exception
    "40",  # transaction rollback: serialization failure, deadlock
    "53",  # insufficient resources: too many connections, out of memory, disk full
    "57",  # operator intervention: admin shutdown, crash shutdown, cannot connect now
    "58",  # system error (I/O)
}
_PG_POISON_CLASSES = {
    "22",  # data exception: out of range, invalid text, division by zero
    "23",  # integrity constraint violation
}
_PG_TRANSIENT_CODES = {"55P03"}  # lock not available
# program_limit_exceeded as such: "index row requires 30040 bytes, maximum size is 8191" (a key too
# big for the state table's btree index). Its siblings (too many columns, statement too complex)
# are about the table or the statement, not one value: they stay permanent.
_PG_POISON_CODES = {"54000"}

_CH = ch_errors.ErrorCodes
_CH_TRANSIENT_CODES = {
    _CH.TIMEOUT_EXCEEDED,
    _CH.SOCKET_TIMEOUT,
    _CH.NETWORK_ERROR,
    _CH.MEMORY_LIMIT_EXCEEDED,
    _CH.TOO_MANY_SIMULTANEOUS_QUERIES,
    _CH.TOO_MANY_PARTS,
    _CH.ALL_CONNECTION_TRIES_FAILED,
    _CH.NO_FREE_CONNECTION,
    _CH.ABORTED,
    _CH.TABLE_IS_READ_ONLY,  # a replica reconnecting to ZooKeeper
}
_CH_POISON_CODES = {
    _CH.CANNOT_PARSE_TEXT,
    _CH.CANNOT_PARSE_NUMBER,
    _CH.CANNOT_PARSE_DATE,
    _CH.CANNOT_PARSE_DATETIME,
    _CH.CANNOT_CONVERT_TYPE,
    _CH.ARGUMENT_OUT_OF_BOUND,
    _CH.VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
    _CH.TYPE_MISMATCH,
    _CH.TOO_LARGE_STRING_SIZE,
}

_CH_CONNECTION_ERRORS = (
    ch_errors.NetworkError,
    ch_errors.SocketTimeoutError,
    ch_errors.UnexpectedPacketFromServerError,
)


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` says the server did not answer at all (no reply in time, no connection), not
    that it answered with an error (too many connections, say): a server that answers is there."""
    if isinstance(exc, (asyncpg.PostgresError, ch_errors.ServerException)):
        return False
    return classify(exc) is ErrorClass.TRANSIENT


def classify(exc: BaseException) -> ErrorClass:
    """The class of a sink error (see the module docstring)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
        if code[:2] in _PG_TRANSIENT_CLASSES or code in _PG_TRANSIENT_CODES:
            return ErrorClass.TRANSIENT
        if code[:2] in _PG_POISON_CLASSES or code in _PG_POISON_CODES:
            return ErrorClass.POISON
        return ErrorClass.PERMANENT
    if isinstance(exc, asyncpg.InternalClientError):
        # "cannot switch to state N; another operation is in progress": the protocol state after a cut
        return ErrorClass.TRANSIENT
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "cannot perform operation: another operation is in progress" after a cut
        return ErrorClass.TRANSIENT if "connection" in str(exc).lower() else ErrorClass.PERMANENT
    if isinstance(exc, ch_errors.ServerException):
        if exc.code in _CH_TRANSIENT_CODES:
            return ErrorClass.TRANSIENT
        if exc.code in _CH_POISON_CODES:
            return ErrorClass.POISON
        return ErrorClass.PERMANENT
    if isinstance(exc, _CH_CONNECTION_ERRORS):
        return ErrorClass.TRANSIENT
    if isinstance(exc, (ch_errors.TypeMismatchError, OverflowError)):
        # Raised by the drivers while sending a value its column cannot take (clickhouse-driver
        # packing 2^62 into a DateTime; asyncpg or datetime overflowing on a timestamp far past 9999).
        return ErrorClass.POISON
    if isinstance(exc, (OSError, TimeoutError, EOFError, ConnectionError, WritersKeptRacing)):
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT
