"""Inserts whose columns cdcfast encodes itself, through clickhouse-driver's connection.

clickhouse-driver sends an insert as: the query, the server's answer with the table's columns (the
sample block), data blocks, an empty block. :class:`NativeClient` sends a :class:`NativeRows`
insert's data block from columns already in Native format (:mod:`cdcfast.sinks._chnative`), when
the server's column types are the ones they were encoded for; otherwise (a table altered by hand,
a value the encoding refuses) the driver encodes the rows itself, as for any insert.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from clickhouse_driver import Client, defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.protocol import ClientPacketTypes
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint8

from cdcfast.sinks.tcp import give_up_unacknowledged


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


class NativeClient(Client):
    """A clickhouse-driver client that sends :class:`NativeRows` from their own encoding, and whose
    sockets give up on a server that acknowledges nothing for ``tcp_timeout_seconds``."""

    tcp_timeout_seconds: float | None = None
    _guarded: socket.socket | None = None

    def establish_connection(self, settings: Any) -> None:
        """Before each query: the driver (re)connects here, after a failed ping too."""
        super().establish_connection(settings)
        sock = self.connection.socket
        if self.tcp_timeout_seconds is not None and sock is not None and sock is not self._guarded:
            give_up_unacknowledged(sock, self.tcp_timeout_seconds)
            self._guarded = sock

    def send_data(self, sample_block: Any, data: Any, types_check: bool = False, columnar: bool = False) -> int:
        if not isinstance(data, NativeRows):
            return super().send_data(sample_block, data, types_check=types_check, columnar=columnar)
        rows = list(data)
        columns = None
        if [t for _, t in sample_block.columns_with_types] == data.types:
            try:
                columns = data.encode(rows)
            except (OverflowError, TypeError, ValueError):
                columns = None  # the driver's own encoding says what is wrong with the value
        if columns is None:
            return super().send_data(sample_block, data.columnar(rows), types_check=types_check, columnar=True)
        self._send_columns(sample_block.columns_with_types, columns, len(rows))
        self.receive_profile_events()
        self.connection.send_data(ColumnOrientedBlock())  # an empty block: the end of the data
        self.receive_profile_events()
        return len(rows)

    def _send_columns(self, names_and_types: list[tuple[str, str]], columns: list[bytes], count: int) -> None:
        """One data packet, as ``Connection.send_data`` and ``BlockOutputStream.write`` send a block."""
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
            out.write(column)
        connection.block_out.finalize()
