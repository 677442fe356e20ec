"""Commands in the Markdown guides: which fences run, and checking gan-* flags.

The convention every guide follows (docs that drift fail CI):

* ```bash   — commands the docs test runs, in order, in a sandbox (see test_docs_commands);
* ```python — Python the docs test runs in the same sandbox;
* ```console, ```ipython — commands for a real deployment (starting containers, installing
  from PyPI, Colab): not run, but every ``gan-worker`` / ``gan-coordinator`` in them is
  parsed by the real argument parser, so a renamed flag still fails;
* ```text, ```yaml, ```json — output and files, shown only.

A fence with no language or another language fails the test: nothing is skipped silently.
Inline code that starts with ``gan-worker`` or ``gan-coordinator`` is parsed too.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUN = ("bash", "python")
CHECK_ONLY = ("console", "ipython")
SHOWN = ("text", "yaml", "json")
PROGRAMS = ("gan-worker", "gan-coordinator")
_FENCE = re.compile(r"^(\s*)```(.*)$")
_INLINE = re.compile(r"`((?:gan-worker|gan-coordinator)(?: [^`]*)?)`")
_OPERATORS = {";", "&&", "||", "|", "&", ">", ">>", "<", "(", ")"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line} ({self.lang or 'no language'})"


def blocks(path: Path) -> list[Block]:
    """Every fenced block, with its language and its text dedented to the fence."""
    out: list[Block] = []
    # HTML comments may talk about fences; blank them out, keeping the line numbers.
    text = re.sub(
        r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S
    )
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = len(m.group(1)), m.group(2).strip(), i + 1
        body = []
        i += 1
        while i < len(lines) and not _FENCE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        out.append(Block(path, start, lang, "\n".join(body) + "\n"))
        i += 1
    return out


def prose(path: Path) -> str:
    """The file with its fenced blocks and HTML comments removed."""
    text = re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S)
    return re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)


def logical_lines(text: str) -> Iterator[str]:
    """Shell lines with backslash continuations joined; IPython's leading ``!`` dropped."""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line.startswith("!"):
            line = line[1:]
        if line and not line.startswith("#"):
            yield line


def program_calls(line: str) -> Iterator[tuple[str, list[str]]]:
    """(program, argv) for each gan-worker / gan-coordinator call in one shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    for i, token in enumerate(tokens):
        if token in PROGRAMS:
            args = []
            for arg in tokens[i + 1 :]:
                if arg in _OPERATORS:
                    break
                args.append(arg)
            yield token, args


def inline_calls(path: Path) -> Iterator[tuple[str, list[str]]]:
    """gan-* calls written as inline code in the prose."""
    for span in _INLINE.findall(prose(path)):
        yield from program_calls(span)


def parse_error(program: str, args: list[str]) -> str | None:
    """None if the real parser accepts ``args``, else what it printed."""
    if program == "gan-worker":
        from worker_client.cli import build_parser as worker_parser

        parser = worker_parser()
        if args[:1] == ["prefetch"]:  # worker_client.cli.main takes it off before parsing
            args = args[1:]
    else:
        from coordinator_service import cli

        try:
            parser = cli.build_parser(with_datasets=True)  # type: ignore[call-arg]
        except TypeError:  # an older CLI without the dataset sub-commands switch
            parser = cli.build_parser()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return err.getvalue().strip() or f"exit {exc.code}"
    return None
