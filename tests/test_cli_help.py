"""Every option of every command's ``--help`` says what it does, its choices and default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from coordinator_service.cli import build_parser as coordinator_parser
from shared.train_local_cli import build_parser as train_local_parser
from worker_client.cli import build_parser as worker_parser


def _commands(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and each sub-command's, by their command lines."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


PARSERS = dict(
    _commands(coordinator_parser(with_datasets=True), "gan-coordinator")
) | {"gan-worker": worker_parser(), "gan-train-local": train_local_parser()}


def _problems(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:  # hidden on purpose (gan-worker --batch-size)
            continue
        name = "/".join(action.option_strings) or action.dest
        text = (action.help or "") % {"default": action.default, "prog": parser.prog}
        if not text.strip():
            yield f"{name}: no description"
            continue
        if action.choices and not all(str(c) in text for c in action.choices):
            yield f"{name}: choices {list(action.choices)} not in {text!r}"
        flag = action.nargs == 0  # store_true, store_false, store_const: no value to default
        if action.option_strings and not flag and "default" not in text:
            yield f"{name}: no default in {text!r}"


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_has_a_description_its_choices_and_default(command: str) -> None:
    assert list(_problems(PARSERS[command])) == []
