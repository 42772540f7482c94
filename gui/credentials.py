"""Content Credentials and the "do not train" statement in the app's words."""

from __future__ import annotations

from fixative.errors import FixativeError
from fixative.gui.form import JobSettings

#: the opt-out choices in the app's words (``--opt-out`` values)
OPT_OUT_LABELS = {
    "ai-training": "Do not train AI on it",
    "gen-ai": "Do not train generative AI on it",
    "all": "No AI training, data mining or AI use",
    "none": "State no preference",
}


def credentials_note() -> str:
    """The line under "Add my Content Credentials": who signs, or how to get an identity."""
    from fixative.provenance.identity import find_identity

    try:
        identity = find_identity()
    except FixativeError as exc:
        return f"Your signing identity cannot be used: {exc}"
    if identity is None:
        return ("You have no signing identity yet: run `fixative identity create --name \"Your Name\"` once. "
                "The do-not-train statement is written either way.")
    return f"Signs each image as {identity.name}, and states your choice below in a way crawlers can read."


def unsigned_reason(settings: JobSettings) -> str:
    """Why a job's images carry no Content Credentials, in words."""
    if not settings.credentials:
        return "Not signed: Content Credentials were switched off (the do-not-train statement is still in the files)."
    return ("Not signed: you have no signing identity yet. Make one once with `fixative identity create --name "
            "\"Your Name\"`; from then on your images are signed (the do-not-train statement is in them already).")

