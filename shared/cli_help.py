"""``--help`` that gives every option's choices and default, for every sub-command.

argparse's ``ArgumentDefaultsHelpFormatter`` prints ``(default: None)`` where the real
default is "the coordinator decides" and does not reach sub-parsers; this fills in what
an option's own text leaves out, once, after a parser is built. An option whose default
is None must say in its text what happens when it is not given.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)


def complete_help(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] = {}) -> None:
    """Append ``(choices: …)`` and ``(default: …)`` to each option's help where missing.

    ``defaults`` by ``dest`` stand in for options whose parser default is SUPPRESS
    (settings that another source fills in, e.g. gan-worker's).
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                complete_help(sub, defaults)
            continue
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        text = action.help or ""
        if action.choices and not all(str(c) in text for c in action.choices):
            text += f" (choices: {', '.join(map(str, action.choices))})"
        default = defaults.get(action.dest, action.default)
        described = "default" in text or isinstance(action, FLAG_ACTIONS)
        if action.option_strings and not described and default not in (None, argparse.SUPPRESS):
            text += f" (default: {str(default).replace('%', '%%')})"
        action.help = text
