"""``docker`` inside the docs sandbox: the few ``docker compose`` commands the guides use.

The docs test puts a ``docker`` script first on PATH that runs this file. It reads the
live coordinator's description (JSON, path in ``DOCS_SANDBOX``) and maps:

* ``docker compose exec [-T] coordinator CMD...`` -> CMD with the coordinator service's
  environment and working directory (as in the container); a ``gan-coordinator``
  client command (run, join-code, workers) without ``--url`` gets the live URL, which
  inside the container is the CLI's default ``http://127.0.0.1:8000``;
* ``docker compose exec [-T] db psql [-U USER] [-d DB] ARGS...`` -> psql on the test
  database;
* ``docker compose cp coordinator:/data/PATH DEST`` -> a copy out of the data volume.

Anything else is refused with a message: such a command belongs in a ```console block.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

CLIENT_COMMANDS = ("run", "join-code", "workers")


def refuse(args: list[str]) -> int:
    """Explain that this command cannot run in the sandbox."""
    print(
        f"docs sandbox: `docker {' '.join(args)}` cannot run on a test machine; "
        "put it in a ```console block",
        file=sys.stderr,
    )
    return 97


def exec_in(service: str, command: list[str], sandbox: dict) -> int:
    """Run ``command`` as ``docker compose exec SERVICE`` would."""
    if service == "coordinator" and command:
        if command[0] == "gan-coordinator":
            command = [sandbox["gan_coordinator"], *command[1:]]
            if len(command) > 1 and command[1] in CLIENT_COMMANDS and "--url" not in command:
                command += ["--url", sandbox["url"]]
        os.chdir(sandbox["coordinator_cwd"])
        os.execvpe(command[0], command, sandbox["coordinator_env"])
    if service == "db" and command[:1] == ["psql"]:
        rest, i = [], 1
        while i < len(command):
            if command[i] in ("-U", "-d", "--username", "--dbname"):
                i += 2
                continue
            rest.append(command[i])
            i += 1
        os.execvp("psql", ["psql", sandbox["database_url"], *rest])
    return refuse(["compose", "exec", service, *command])


def copy_out(source: str, dest: str, sandbox: dict) -> int:
    """``docker compose cp coordinator:/data/... DEST``."""
    service, _, path = source.partition(":")
    if service != "coordinator" or not path.startswith("/data/"):
        return refuse(["compose", "cp", source, dest])
    local = Path(sandbox["data_dir"]) / path[len("/data/") :]
    shutil.copy(local, dest)
    return 0


def main(args: list[str]) -> int:
    """Dispatch one ``docker`` command line."""
    sandbox = json.loads(Path(os.environ["DOCS_SANDBOX"]).read_text())
    if args[:2] == ["compose", "exec"]:
        rest = [a for a in args[2:] if a not in ("-T", "-i", "-t", "-it")]
        if rest:
            return exec_in(rest[0], rest[1:], sandbox)
    if args[:2] == ["compose", "cp"] and len(args) == 4:
        return copy_out(args[2], args[3], sandbox)
    return refuse(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
