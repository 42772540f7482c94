"""An argparse parser that answers a mistyped option or choice with "did you mean ...?".

``fixative protect art.png --stpes 10`` ends in ``unrecognized arguments: --stpes 10 (did you mean
--steps?)``; ``--mode clok`` in ``invalid choice: 'clok' ... (did you mean 'cloak'?)``. Subparsers made
from a :class:`SuggestingParser` are ones too, so every subcommand gets the same help.
"""

from __future__ import annotations

import argparse
import difflib
import re

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--option`` of ``parser`` and of its subcommands' parsers, recursively."""
    found: list[str] = []
    for action in parser._actions:
        found += [s for s in action.option_strings if s.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _option_strings(sub)
    return list(dict.fromkeys(found))


def _close(word: str, options: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggestion(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` (an argparse error) with "did you mean ...?" added where a close match exists."""
    if "unrecognized arguments:" in message:
        options = _option_strings(parser)
        words = message.split("unrecognized arguments:", 1)[1].split()
        hints = []
        for word in words:
            if word.startswith("-"):
                name = word.split("=", 1)[0]
                match = _close(name, options) or _close("--" + name.lstrip("-"), options)
                if match and match != name:
                    hints.append(f"{name} -> {match}")
        if hints:
            return f"{message} (did you mean: {', '.join(hints)}?)"
        return message
    found = _INVALID_CHOICE.search(message)
    if found:
        choices = [c.strip().strip("'") for c in found.group(2).split(",")]
        match = _close(found.group(1), choices)
        if match:
            return f"{message}; did you mean '{match}'?"
    return message


class SuggestingParser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` whose usage errors suggest the closest option or choice."""

    def error(self, message: str):  # type: ignore[override]
        root = getattr(self, "_suggest_root", None) or self
        super().error(suggestion(message, root))
