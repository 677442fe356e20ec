"""The app's PostgreSQL role: what the schema's owner grants it each time migrations run.

Least privilege with two roles (docker-compose.yml creates both): the owner runs
``gan-coordinator migrate`` and alone may change the schema; ``serve`` connects as the
app role (``GAN_APP_ROLE``), which may read and write rows and nothing more. A bug or an
injected statement in the API can then damage data but never drop, alter or add a table.

What ``serve`` runs, read from coordinator_service/db and the aggregator, and so what
the role gets:

* SELECT, INSERT, UPDATE, DELETE on the app's tables (UPDATE also covers the
  ``LOCK TABLE join_codes IN EXCLUSIVE MODE`` of a join-code rotation);
* USAGE and SELECT on the sequences behind the ``bigserial`` ids (nextval);
* SELECT only on ``alembic_version``: ``serve`` checks the schema is at head, and the
  app has no business moving that mark;
* advisory locks (the aggregator's and the run locks) need no privilege at all.

Nothing else: no TRUNCATE, REFERENCES or TRIGGER, no CREATE on the schema or the
database, and no ownership (only an owner may ALTER, DROP or index a table). Each
migrate first revokes everything from the role and grants that list again inside one
transaction, so hand-made grants do not linger and a table a new migration adds is
covered (there are no default privileges to forget); ``serve`` refuses a schema behind
head, so a migrate, and with it this grant, always runs before a new schema is used.
Then it checks the outcome: the grant fails loudly rather than leaving a role that can
still change the schema (say, through a CREATE granted to PUBLIC by an older server).
"""

from __future__ import annotations

import asyncpg

# The tables' privileges; alembic_version gets SELECT only (see the module docstring).
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"
VERSION_TABLE = "alembic_version"


class AppRoleError(RuntimeError):
    """The app role is missing, too powerful, or could not be restricted."""


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier in double quotes, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


async def _migrated_schema(conn: asyncpg.Connection) -> str:
    """The schema alembic wrote to: the one holding alembic_version."""
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass($1)",
        VERSION_TABLE,
    )
    if schema is None:
        raise AppRoleError("the database has no alembic_version table: migrate it first")
    return str(schema)


async def _check_role(conn: asyncpg.Connection, role: str) -> None:
    """Refuse a role that does not exist or that would bypass every restriction."""
    row = await conn.fetchrow(
        "SELECT rolsuper, rolname = current_user AS is_me, "
        "pg_has_role(rolname, current_user, 'USAGE') AS has_mine "
        "FROM pg_roles WHERE rolname = $1",
        role,
    )
    if row is None:
        raise AppRoleError(
            f"GAN_APP_ROLE={role}: no such PostgreSQL role; create it first "
            "(docker-compose.yml's db service does, with deploy/postgres-init/10-app-role.sh)"
        )
    if row["rolsuper"]:
        raise AppRoleError(f"GAN_APP_ROLE={role} is a superuser: it could change anything")
    if row["is_me"] or row["has_mine"]:
        raise AppRoleError(
            f"GAN_APP_ROLE={role} is (or inherits) the role running the migration, which "
            "owns the schema: use a separate role for the app"
        )


def grant_statements(role: str, *, schema: str, database: str) -> list[str]:
    """The SQL that gives ``role`` exactly what ``serve`` needs in ``schema`` (in order)."""
    r, s, d = quote_ident(role), quote_ident(schema), quote_ident(database)
    version = f"{s}.{quote_ident(VERSION_TABLE)}"
    return [
        f"GRANT CONNECT ON DATABASE {d} TO {r}",
        f"REVOKE CREATE ON DATABASE {d} FROM {r}",
        # A checkpoint is streamed into a temporary table (StatesRepo.add_checkpoint);
        # PUBLIC has this by default, a hardened server may not.
        f"GRANT TEMPORARY ON DATABASE {d} TO {r}",
        f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC",
        f"REVOKE ALL ON SCHEMA {s} FROM {r}",
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"REVOKE INSERT, UPDATE, DELETE ON {version} FROM {r}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
        f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    ]


async def _check_outcome(conn: asyncpg.Connection, role: str, schema: str) -> None:
    """Fail unless the role, through any grant (PUBLIC included), cannot create objects."""
    can_create = await conn.fetchrow(
        "SELECT has_schema_privilege($1, $2, 'CREATE') AS in_schema, "
        "has_database_privilege($1, current_database(), 'CREATE') AS in_database",
        role,
        schema,
    )
    assert can_create is not None
    if can_create["in_schema"] or can_create["in_database"]:
        where = f"schema {schema}" if can_create["in_schema"] else "the database"
        raise AppRoleError(
            f"GAN_APP_ROLE={role} can still CREATE in {where} after the revoke (run the "
            "migration as the owner of the schema and the database)"
        )


async def grant_app_role(database_url: str, *, role: str) -> None:
    """Give ``role`` exactly the privileges ``serve`` needs, in one transaction."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await _check_role(conn, role)
            schema = await _migrated_schema(conn)
            database = str(await conn.fetchval("SELECT current_database()"))
            for statement in grant_statements(role, schema=schema, database=database):
                await conn.execute(statement)
            await _check_outcome(conn, role, schema)
    finally:
        await conn.close()
