"""``gan-worker``: parse flags, build the settings, run the worker, turn errors into advice."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.cli_help import complete_help
from worker_client.errors import ConfigError, JoinCodeRejected, TLSVerifyError, WorkerError
from worker_client.settings import ENV_PREFIX, WorkerSettings

log = logging.getLogger("worker_client")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag is optional and only overrides when given."""
    p = argparse.ArgumentParser(
        prog="gan-worker",
        description="Help your class train one GAN: join the coordinator and compute work units. "
        "`gan-worker prefetch [FLAGS]` downloads the dataset's shards ahead of class.",
        epilog=f"Every setting can also come from config.yaml (--config) or an environment "
        f"variable {ENV_PREFIX}<NAME> (e.g. {ENV_PREFIX}URL). Flags win over both.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--url", help="coordinator address, e.g. http://192.168.1.10:8000")
    p.add_argument(
        "--join-code", dest="join_code",
        help="class join code (needed the first time; after that the saved token is used, "
        "so there is no default)",
    )  # fmt: skip
    p.add_argument("--name", help="your name on the leaderboard (default: your login name)")
    p.add_argument(
        "--config", type=Path,
        help="YAML settings file, see config.yaml.template (default: none)",
    )  # fmt: skip
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    # Gone: the run fixes the micro-batch. Kept hidden so that the settings explain why.
    p.add_argument("--batch-size", dest="batch_size", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--poll-interval",
        dest="poll_interval",
        type=float,
        help="seconds to wait when there is no work (grows up to --max-poll-interval)",
    )
    p.add_argument(
        "--max-poll-interval", dest="max_poll_interval", type=float,
        help="longest wait between polls, in seconds",
    )  # fmt: skip
    p.add_argument(
        "--ca-bundle",
        dest="ca_bundle",
        type=Path,
        help="CA certificate file for a coordinator with a self-signed HTTPS certificate "
        "(default: the system's certificates)",
    )
    p.add_argument(
        "--max-units", dest="max_units", type=int,
        help="stop after this many units (default: until the run ends)",
    )  # fmt: skip
    p.add_argument(
        "--once",
        dest="max_units",
        action="store_const",
        const=1,
        help="do a single work unit, then stop",
    )
    p.add_argument(
        "--state-dir",
        dest="state_dir",
        type=Path,
        help="where the worker token is saved (default: your user data folder)",
    )
    p.add_argument(
        "--torch-threads",
        dest="torch_threads",
        type=int,
        help="CPU threads torch may use (default: torch's choice)",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar (for logs)"
    )
    p.add_argument(
        "--new-identity",
        dest="new_identity",
        action="store_true",
        help="register again instead of reusing the saved token",
    )
    p.add_argument(
        "--cache-size",
        dest="cache_size",
        help="largest size of the downloaded-shard cache, e.g. 3GB (default) or 500MB",
    )
    p.add_argument(
        "--cache-dir", dest="cache_dir", type=Path,
        help="where shards are cached (default: your user cache folder)",
    )  # fmt: skip
    p.add_argument(
        "--dataset-dir",
        dest="dataset_dir",
        type=Path,
        help="a local copy of the dataset's shards (a folder with manifest.json): no "
        "downloads (default: download from the coordinator)",
    )
    p.add_argument(
        "--allow-insecure-http", dest="allow_insecure_http", action="store_true",
        help="allow a plain http:// --url to another machine; the worker token then crosses "
        "the network unencrypted (default: only https, or http to this machine)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="debug output and every request")
    complete_help(p, {name: field.default for name, field in WorkerSettings.model_fields.items()})
    return p


def load_settings(argv: Sequence[str] | None = None) -> tuple[WorkerSettings, bool]:
    """Settings from flags, environment and config file; and whether --new-identity was given."""
    given: dict[str, Any] = vars(build_parser().parse_args(argv))
    new_identity = bool(given.pop("new_identity", False))
    return WorkerSettings(**given), new_identity


def _tls_advice(settings: WorkerSettings, exc: Exception) -> str:
    if settings.ca_bundle:
        return (
            f"The coordinator's HTTPS certificate is not signed by {settings.ca_bundle} ({exc}). "
            "Check that you have the CA file from this class's instructor and the right --url."
        )
    return (
        f"The coordinator's HTTPS certificate is not trusted by this computer ({exc}). It is "
        "probably self-signed: ask your instructor for the CA certificate file (e.g. ca.pem) "
        "and run again with --ca-bundle ca.pem (or put ca_bundle: ca.pem in config.yaml, or set "
        f"{ENV_PREFIX}CA_BUNDLE)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gan-worker``; returns the process exit code."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # lines appear at once, even in a pipe
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv[:1] == ["prefetch"] else "run"  # gan-worker prefetch [FLAGS]
    try:
        settings, new_identity = load_settings(argv)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"gan-worker: invalid settings: {problems}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as exc:  # a missing or unreadable config file
        print(f"gan-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = settings.insecure_http_problem()
    if problem:  # checked before any request: the token must not leave in clear even once
        print(f"gan-worker: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from worker_client.report import setup_logging

    setup_logging(settings.verbose)
    try:
        if command == "prefetch":
            from worker_client.prefetch import prefetch

            return prefetch(settings, new_identity)
        return _run(settings, new_identity)
    except TLSVerifyError as exc:
        log.error(_tls_advice(settings, exc))
    except JoinCodeRejected as exc:
        log.error(
            "The coordinator did not accept the join code (%s). Check it with your "
            "instructor and run again with --join-code CODE.",
            exc.detail,
        )
    except ConfigError as exc:
        log.error("Cannot start: %s", exc)
        return EXIT_USAGE
    except WorkerError as exc:
        log.error("Stopped: %s", exc)
    except KeyboardInterrupt:  # Ctrl+C before the worker took over the signals
        return 130
    return 1


def _run(settings: WorkerSettings, new_identity: bool) -> int:
    # torch is imported only now: --help and settings errors answer instantly.
    import torch

    from worker_client.api_client import CoordinatorClient
    from worker_client.hardware import describe, resolve_device
    from worker_client.identity import IdentityStore
    from worker_client.stopping import StopSignal
    from worker_client.worker import Worker

    stop = StopSignal()
    stop.install()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    with CoordinatorClient(
        settings.url,
        ca_bundle=settings.ca_bundle,
        connect_timeout=settings.connect_timeout,
        request_timeout=settings.request_timeout,
    ) as client:
        worker = Worker(
            settings,
            client,
            IdentityStore(settings.state_dir),
            stop,
            device=device,
            hardware=describe(device),
            new_identity=new_identity,
        )
        return worker.run()
