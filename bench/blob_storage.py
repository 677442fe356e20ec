"""Where result bodies and checkpoints cost least: bytea, large objects, or files + fsync.

Each candidate stores the same incompressible bodies durably (committed, or written and
fsynced with the directory) and reads them back, one at a time as an upload and a step
do. ``bytea`` is what the coordinator does today (a ``STORAGE EXTERNAL`` column, no
pglz); ``large object`` is ``lo_from_bytea`` inside the same transaction as a row
pointing at it; ``file`` is a content-addressed file beside the database, written to a
temporary name, fsynced, renamed and the directory fsynced, then a row inserted (what
"accepted means durable" would need); ``bytea by COPY`` is the bytea column written by a
binary COPY streamed in 1 MB pieces (``copy_row``, how the coordinator writes a version's
weights and Adam state). Times include the client's encode and the round trips, from one
asyncpg connection, on a fresh database; ``loop stall`` is how late, at worst, a 1 ms
timer on the same event loop fired while the writes ran (every request a coordinator
is serving waits that long).

    .venv/bin/python bench/blob_storage.py --mb 11 25 --count 12
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from coordinator_service.db.large_rows import copy_row, int4
from coordinator_service.embedded import with_database

SCHEMA = """
CREATE TABLE bytea_blobs (id serial PRIMARY KEY, body bytea NOT NULL);
ALTER TABLE bytea_blobs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE lo_blobs (id serial PRIMARY KEY, body oid NOT NULL);
CREATE TABLE file_blobs (id serial PRIMARY KEY, sha256 text NOT NULL);
"""


class Candidate:
    def __init__(self, conn: asyncpg.Connection, folder: Path) -> None:
        self.conn, self.folder = conn, folder

    async def bytea_write(self, body: bytes) -> int:
        return await self.conn.fetchval(
            "INSERT INTO bytea_blobs (body) VALUES ($1) RETURNING id", body
        )

    async def copy_write(self, body: bytes) -> int:
        key = int(await self.conn.fetchval("SELECT nextval('bytea_blobs_id_seq')"))
        await copy_row(self.conn, "bytea_blobs", {"id": int4(key), "body": body})
        return key

    async def bytea_read(self, key: int) -> bytes:
        return await self.conn.fetchval("SELECT body FROM bytea_blobs WHERE id = $1", key)

    async def lo_write(self, body: bytes) -> int:
        async with self.conn.transaction():
            return await self.conn.fetchval(
                "INSERT INTO lo_blobs (body) VALUES (lo_from_bytea(0, $1)) RETURNING id", body
            )

    async def lo_read(self, key: int) -> bytes:
        return await self.conn.fetchval("SELECT lo_get(body) FROM lo_blobs WHERE id = $1", key)

    async def file_write(self, body: bytes) -> int:
        digest = hashlib.sha256(body).hexdigest()
        await asyncio.to_thread(self._write_file, digest, body)
        return await self.conn.fetchval(
            "INSERT INTO file_blobs (sha256) VALUES ($1) RETURNING id", digest
        )

    def _write_file(self, digest: str, body: bytes) -> None:
        final = self.folder / digest
        partial = final.with_suffix(".partial")
        with partial.open("wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        partial.rename(final)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def file_read(self, key: int) -> bytes:
        digest = await self.conn.fetchval("SELECT sha256 FROM file_blobs WHERE id = $1", key)
        return await asyncio.to_thread((self.folder / digest).read_bytes)


async def timed(
    write: Callable[[bytes], Awaitable[int]],
    read: Callable[[int], Awaitable[bytes]],
    bodies: list[bytes],
) -> tuple[float, float, float]:
    """Median seconds to store one body durably and to read one back, and the event
    loop's worst stall while the bodies were written."""
    writes, reads, keys = [], [], []
    worst, writing = 0.0, True

    async def tick() -> None:
        nonlocal worst
        while writing:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - started - 0.001)

    ticker = asyncio.create_task(tick())
    for body in bodies:
        started = time.perf_counter()
        keys.append(await write(body))
        writes.append(time.perf_counter() - started)
    writing = False
    await ticker
    for key, body in zip(keys, bodies, strict=True):
        started = time.perf_counter()
        back = await read(key)
        reads.append(time.perf_counter() - started)
        assert back == body
    return statistics.median(writes), statistics.median(reads), worst


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[11.0, 25.0],
                        help="body sizes in MB (default: a D-phase result and G + D)")  # fmt: skip
    parser.add_argument("--count", type=int, default=12, help="bodies per size and candidate")
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))  # fmt: skip
    args = parser.parse_args()
    name = f"gan_blob_bench_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(with_database(args.database_url, name))
        await conn.execute(SCHEMA)
        with tempfile.TemporaryDirectory(dir=os.environ.get("BLOB_DIR")) as folder:
            candidate = Candidate(conn, Path(folder))
            print("| body MB | store | write p50 ms | write MB/s | loop stall ms | read p50 ms "
                  "| read MB/s |")  # fmt: skip
            print("|---|---|---|---|---|---|---|")
            for mb in args.mb:
                bodies = [os.urandom(int(mb * 1e6)) for _ in range(args.count)]
                for label, write, read in (
                    ("bytea", candidate.bytea_write, candidate.bytea_read),
                    ("bytea by COPY", candidate.copy_write, candidate.bytea_read),
                    ("large object", candidate.lo_write, candidate.lo_read),
                    ("file + fsync", candidate.file_write, candidate.file_read),
                ):
                    w, r, stall = await timed(write, read, bodies)
                    print(f"| {mb:g} | {label} | {1000 * w:.0f} | {mb / w:.0f} | "
                          f"{1000 * stall:.0f} | {1000 * r:.0f} | {mb / r:.0f} |",
                          flush=True)  # fmt: skip
        await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
