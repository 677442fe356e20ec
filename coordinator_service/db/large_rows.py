"""Rows of tens of megabytes, written without stopping the event loop."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Mapping, Sequence

import asyncpg

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no flags, no extension
_COPY_PIECE = 1 << 20
_FLOAT4_OID = 700  # an array's header names its elements' type


def int8(value: int) -> bytes:
    """A bigint in COPY's binary format."""
    return struct.pack("!q", value)


def int4(value: int) -> bytes:
    """An integer in COPY's binary format."""
    return struct.pack("!i", value)


def float8(value: float) -> bytes:
    """A double precision in COPY's binary format."""
    return struct.pack("!d", value)


def float4_array(values: Sequence[float]) -> bytes:
    """A one-dimensional ``real[]`` without NULLs in COPY's binary format: dimensions,
    no-nulls flag, element type, then (size, lower bound 1) and each length-prefixed
    element."""
    header = struct.pack("!iiiii", 1, 0, _FLOAT4_OID, len(values), 1)
    return header + b"".join(struct.pack("!if", 4, v) for v in values)


async def copy_row(
    conn: asyncpg.Connection, table: str, fields: Mapping[str, bytes | None]
) -> None:
    """Insert one row of tens of megabytes through a binary COPY, sent in 1 MB pieces
    with the event loop free between them. ``fields`` maps each column to its value in
    PostgreSQL's binary format (bytea and text: the bytes themselves, a uuid its 16
    bytes; see the encoders above) or None for NULL; a column left out gets its
    default; a duplicate key raises UniqueViolationError, as an INSERT does.

    Why: an INSERT's bytea parameter is copied whole into asyncpg's buffer and on to the
    socket while the loop waits. The step's 88 MB row at the class model (weights and
    Adam state) stopped the loop, and every request in flight, for 127 ms alone and up
    to 368 ms under load; streamed, for 2 ms (bench/blob_storage.py). An upload's 13 MB
    body held it 24 ms alone. Streamed, the loop spends about as long writing a row, but
    a piece at a time, and other requests run between the pieces.
    """

    async def pieces() -> AsyncIterator[bytes | memoryview]:
        yield _COPY_SIGNATURE + struct.pack("!h", len(fields))
        for value in fields.values():
            yield struct.pack("!i", -1 if value is None else len(value))
            view = memoryview(value or b"")
            for start in range(0, len(view), _COPY_PIECE):
                yield view[start : start + _COPY_PIECE]
                await asyncio.sleep(0)  # asyncpg sends a piece and asks for the next at once
        yield struct.pack("!h", -1)

    await conn.copy_to_table(table, source=pieces(), columns=list(fields), format="binary")
