"""Inserts whose columns cdcfast encodes itself, through clickhouse-driver's connection.

clickhouse-driver sends an insert as: the query, the server's answer with the table's columns (the
sample block), data blocks, an empty block. :class:`NativeClient` sends the data block of

* a :class:`NativeRows` insert (change logs) from columns already in Native format
  (:mod:`cdcfast.sinks._chnative`), when the server's column types are the ones they were encoded
  for;
* a :class:`NativeColumns` insert (state rows) column by column, each encoded for the type the
  server gives it: by :func:`cdcfast.sinks._chnative.encode_column` where it knows the type, by the
  driver's own column writer for the others.

Otherwise (a table altered by hand, a value the encoding refuses) the driver encodes the whole
insert itself, as for any insert.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_driver import Client, defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.columns.service import write_column
from clickhouse_driver.protocol import ClientPacketTypes
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint8

from cdcfast.sinks._chnative import encode_column
from cdcfast.sinks.tcp import give_up_unacknowledged

REFUSED = (OverflowError, TypeError, ValueError)  # a value cdcfast's encoding does not take: the driver's turn


class NativeRows(list):
    """An insert's rows (a list, so that ``Client.execute`` takes it as an insert's data) with
    ``encode``: their Native-format columns, for a table of column ``types``; and ``columnar``:
    the columns as the driver takes them, for any other table or when ``encode`` refuses a value."""

    def __init__(
        self,
        rows: list[tuple],
        types: list[str],
        encode: Callable[[list[tuple]], list[bytes]],
        columnar: Callable[[list[tuple]], list[list[Any]]],
    ) -> None:
        super().__init__(rows)
        self.types, self.encode, self.columnar = types, encode, columnar


class NativeColumns(list):
    """A columnar insert's columns (a list of lists, as ``Client.execute(..., columnar=True)`` takes
    them), each encoded for the type the server gives it."""


class NativeClient(Client):
    """A clickhouse-driver client that sends :class:`NativeRows` and :class:`NativeColumns` from
    cdcfast's own encoding, that can leave an insert's end unheard until its next statement
    (:meth:`insert_unacknowledged`), and whose sockets give up on a server that acknowledges nothing
    for ``tcp_timeout_seconds``."""

    tcp_timeout_seconds: float | None = None
    _guarded: socket.socket | None = None
    _leave_end_unheard: str | None = None  # the insert_unacknowledged running
    _unheard: str | None = None  # the insert whose end the server has not been heard on yet

    def insert_unacknowledged(self, query: str, data: Any, columnar: bool = False) -> int:
        """``execute(query, data)`` for an insert, returning once its data is sent, before the server
        reports it stored: the caller goes on with its own work while the server stores the rows.
        The server's answer is heard before this client's next statement, or by :meth:`acknowledged`;
        a refusal raises there (the server's error), and that statement is not sent."""
        self._leave_end_unheard = query
        try:
            return self.execute(query, data, columnar=columnar)
        finally:
            self._leave_end_unheard = None

    def receive_end_of_insert_query(self) -> None:
        if self._leave_end_unheard is not None:
            self._unheard = self._leave_end_unheard
            return
        super().receive_end_of_insert_query()

    def acknowledged(self) -> None:
        """Wait for the server's answer to the insert left unacknowledged, if any; raise its error if
        it refused the insert (the connection is closed then: what follows on it is unknown)."""
        if self._unheard is None:
            return
        query, self._unheard = self._unheard, None
        try:
            super().receive_end_of_insert_query()
        except BaseException as exc:
            self.disconnect()
            exc.add_note(f"(the server's answer to {query})")
            raise

    def abandon_unacknowledged(self) -> None:
        """For a caller giving up its work: the answer to an insert left unacknowledged is dropped
        with the connection (the next statement reconnects), rather than raised at that statement."""
        if self._unheard is not None:
            self.disconnect()

    def disconnect_connection(self) -> None:
        self._unheard = None  # a closed connection brings no answer
        super().disconnect_connection()

    def establish_connection(self, settings: Any) -> None:
        """Before each query: the last insert's answer first, then the driver (re)connects here,
        after a failed ping too."""
        self.acknowledged()
        super().establish_connection(settings)
        sock = self.connection.socket
        if self.tcp_timeout_seconds is not None and sock is not None and sock is not self._guarded:
            give_up_unacknowledged(sock, self.tcp_timeout_seconds)
            self._guarded = sock

    def send_data(self, sample_block: Any, data: Any, types_check: bool = False, columnar: bool = False) -> int:
        if isinstance(data, NativeRows):
            return self._send_rows(sample_block, data, types_check)
        if isinstance(data, NativeColumns):
            return self._send_state_columns(sample_block, data, types_check)
        return super().send_data(sample_block, data, types_check=types_check, columnar=columnar)

    def _send_rows(self, sample_block: Any, data: NativeRows, types_check: bool) -> int:
        rows = list(data)
        columns = None
        if [t for _, t in sample_block.columns_with_types] == data.types:
            try:
                columns = data.encode(rows)
            except REFUSED:
                columns = None  # the driver's own encoding says what is wrong with the value
        if columns is None:
            return super().send_data(sample_block, data.columnar(rows), types_check=types_check, columnar=True)
        return self._send_block(sample_block.columns_with_types, columns, len(rows))

    def _send_state_columns(self, sample_block: Any, data: NativeColumns, types_check: bool) -> int:
        names_and_types = sample_block.columns_with_types
        columns: list[bytes | list[Any]] | None = None
        if len(names_and_types) == len(data):
            try:
                columns = [_encoded_or_as_is(type_, column) for (_, type_), column in zip(names_and_types, data)]
            except REFUSED:
                columns = None  # the driver's own encoding says what is wrong with the value
        if columns is None:
            return super().send_data(sample_block, list(data), types_check=types_check, columnar=True)
        return self._send_block(names_and_types, columns, len(data[0]) if data else 0, types_check)

    def _send_block(
        self,
        names_and_types: list[tuple[str, str]],
        columns: Sequence[bytes | list[Any]],
        count: int,
        types_check: bool = False,
    ) -> int:
        """The data block, then the empty block that ends the insert's data."""
        self._send_columns(names_and_types, columns, count, types_check)
        self.receive_profile_events()
        self.connection.send_data(ColumnOrientedBlock())  # an empty block: the end of the data
        self.receive_profile_events()
        return count

    def _send_columns(
        self,
        names_and_types: list[tuple[str, str]],
        columns: Sequence[bytes | list[Any]],
        count: int,
        types_check: bool,
    ) -> None:
        """One data packet, as ``Connection.send_data`` and ``BlockOutputStream.write`` send a block:
        each column as its Native bytes, or (a list of values) written by the driver's column writer."""
        connection = self.connection
        revision = connection.server_info.used_revision
        write_varint(ClientPacketTypes.DATA, connection.fout)
        if revision >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
            write_binary_str("", connection.fout)  # no temporary table's name
        out = connection.block_out.fout  # the compressing buffer when the connection compresses
        if revision >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
            BlockInfo().write(out)
        write_varint(len(columns), out)
        write_varint(count, out)
        for (name, type_), column in zip(names_and_types, columns, strict=True):
            write_binary_str(name, out)
            write_binary_str(type_, out)
            if revision >= defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
                write_binary_uint8(0, out)  # no custom serialization
            if isinstance(column, bytes):
                out.write(column)
            else:
                write_column(connection.context, name, type_, column, out, types_check=types_check)
        connection.block_out.finalize()


def _encoded_or_as_is(type_: str, values: list[Any]) -> bytes | list[Any]:
    """A column's Native bytes, or its values when cdcfast does not encode ``type_``."""
    encoded = encode_column(type_, values)
    return values if encoded is None else encoded
