"""The command line's words for the library's: messages name options by their path in
:class:`fixative.options.ProtectOptions` (``search.tile_size``); the command line shows its flag
(``--tile-size``), by the one table :data:`fixative.options.COMMAND_LINE_FLAGS`."""

from __future__ import annotations

import logging
import re

from fixative.errors import ConfigError
from fixative.options import COMMAND_LINE_FLAGS

_TERMS = re.compile(r"(?<![\w./\\-])(" + "|".join(
    re.escape(term) for term in sorted(COMMAND_LINE_FLAGS, key=len, reverse=True) if "." in term) + r")(?![\w-])")


def flag_for(field: str | None) -> str | None:
    """The flag of an option's path (or of its last part, for a part's own field name), or None."""
    if field is None:
        return None
    if field in COMMAND_LINE_FLAGS:
        return COMMAND_LINE_FLAGS[field]
    leaf = field.rsplit(".", 1)[-1]
    found = [flag for path, flag in COMMAND_LINE_FLAGS.items() if path.rsplit(".", 1)[-1] == leaf]
    return found[0] if len(found) == 1 else None


def in_flags(text: str) -> str:
    """``text`` with every option path in it replaced by its flag."""
    return _TERMS.sub(lambda m: COMMAND_LINE_FLAGS[m.group(1)], text)


def error_line(exc: BaseException, flags: dict[str, str] | None = None) -> str:
    """A library error as the command line says it: in its flags, naming the option's flag if the
    message does not already. ``flags``: a subcommand's own flags for fields (checked first; e.g.
    ``fixative eval finetune`` names ``finetune.model`` ``--model``)."""
    text = in_flags(str(exc))
    for path, own in (flags or {}).items():
        text = re.sub(rf"(?<![\w./\\-]){re.escape(path)}(?![\w-])", own, text)
    field = exc.field if isinstance(exc, ConfigError) else None
    flag = (flags or {}).get(field) or flag_for(field)
    if flag is not None and flag.startswith("-") and flag not in text:
        text = f"{flag}: {text}"
    return text


class FlagTerms(logging.Filter):
    """A logging filter that puts the library's log lines in the command line's flags."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        changed = in_flags(message)
        if changed != message:
            record.msg, record.args = changed, None
        return True
