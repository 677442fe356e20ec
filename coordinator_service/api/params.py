"""Integers in paths and queries, bounded to the columns they are looked up in.

asyncpg refuses a Python int outside its column's type with an exception no route
expects, so ``GET /weights/2147483648`` used to be a 500 with a traceback. Bounded here,
such a number is the documented 422 (``invalid_request``) before any SQL runs, and the
bounds appear in /openapi.json for clients and fuzzers. Ids are ``bigserial`` (from 1),
iterations, epochs and shard numbers ``integer`` (see alembic/versions/0001).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1

RunIdPath = Annotated[int, Path(ge=1, le=INT8_MAX, description="run id")]
UnitIdPath = Annotated[int, Path(ge=1, le=INT8_MAX, description="work unit id")]
WorkerIdPath = Annotated[int, Path(ge=1, le=INT8_MAX, description="worker id")]
IterationPath = Annotated[int, Path(ge=0, le=INT4_MAX, description="training iteration")]
ShardPath = Annotated[int, Path(ge=0, le=INT4_MAX, description="shard number")]

RunIdQuery = Annotated[
    int | None, Query(ge=1, le=INT8_MAX, description="run id; default: the current run")
]
SinceQuery = Annotated[
    int, Query(ge=0, le=INT4_MAX, description="only iterations from this one on")
]
