"""The machine-readable "do not train" statement written into every protected file.

Two vocabularies say the same wish, for two kinds of reader:

- IPTC Photo Metadata 2023.1 (from the PLUS Coalition): ``plus:DataMining``, a URI of the PLUS
  Data Mining vocabulary, and ``plus:OtherConstraints``, the same in words; both in the file's
  XMP, which crawlers and metadata tools (ExifTool, Adobe apps) read.
- The CAWG training-and-data-mining assertion (``cawg.training-mining``) in the file's C2PA
  manifest (:mod:`fixative.provenance.credentials`): ``cawg.ai_generative_training``, ``cawg.ai_training``,
  ``cawg.data_mining`` and ``cawg.ai_inference``, each ``allowed`` / ``notAllowed`` /
  ``constrained``. Only the uses the user forbids are listed: an absent entry states nothing.

:func:`with_opt_out` adds the IPTC properties to the XMP carried from the input (or a new
packet), replacing any earlier Data Mining statement and keeping everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

from fixative.errors import ConfigError

PLUS_NS = "http://ns.useplus.org/ldf/xmp/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PLUS_VOCAB = "http://ns.useplus.org/ldf/vocab/"
CAWG_LABEL = "cawg.training-mining"


@dataclass(frozen=True)
class OptOut:
    """One ``--opt-out`` level: its IPTC Data Mining value, its words and the CAWG uses it forbids."""

    level: str
    iptc: str  # the PLUS vocabulary code, without the namespace
    text: str | None  # plus:OtherConstraints (None: not written)
    not_allowed: tuple[str, ...]  # CAWG entries set to "notAllowed"

    @property
    def iptc_uri(self) -> str:
        return PLUS_VOCAB + self.iptc

    def cawg_entries(self) -> dict[str, dict[str, str]]:
        """The ``entries`` of the ``cawg.training-mining`` assertion (empty for ``none``)."""
        return {f"cawg.{use}": {"use": "notAllowed"} for use in self.not_allowed}

    def describe(self) -> dict:
        """What the record keeps (and :func:`fixative.provenance.manifest.verify` compares with the manifest)."""
        return {"level": self.level, "iptc": self.iptc_uri, "constraints": self.text, "cawg": self.cawg_entries()}


OPT_OUTS: dict[str, OptOut] = {
    o.level: o
    for o in (
        OptOut("none", "DMI-UNSPECIFIED", None, ()),
        OptOut("ai-training", "DMI-PROHIBITED-AIMLTRAINING",
               "The rights holder does not allow this image to be used to train AI or machine-learning models.",
               ("ai_training", "ai_generative_training")),
        OptOut("gen-ai", "DMI-PROHIBITED-GENAIMLTRAINING",
               "The rights holder does not allow this image to be used to train generative AI models.",
               ("ai_generative_training",)),
        OptOut("all", "DMI-PROHIBITED",
               "The rights holder does not allow this image to be data-mined, used to train AI or "
               "machine-learning models, or used as input to AI models.",
               ("ai_training", "ai_generative_training", "data_mining", "ai_inference")),
    )
}


def get_opt_out(level: str) -> OptOut:
    """The :class:`OptOut` named ``level`` (one of :data:`OPT_OUTS`); ConfigError otherwise."""
    try:
        return OPT_OUTS[level]
    except KeyError:
        raise ConfigError(f"unknown output.opt_out {level!r}; choose one of {', '.join(OPT_OUTS)}",
                          field="output.opt_out") from None


_EMPTY_XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    b" </rdf:RDF>\n"
    b"</x:xmpmeta>\n"
    b'<?xpacket end="w"?>'
)


def _without_plus(xmp: str) -> str:
    """``xmp`` less any earlier plus:DataMining / plus:OtherConstraints (element or attribute form)."""
    prefixes = set(re.findall(r'xmlns:([\w.-]+)\s*=\s*["\']' + re.escape(PLUS_NS) + r'["\']', xmp))
    for prefix in prefixes:
        for prop in ("DataMining", "OtherConstraints"):
            name = re.escape(f"{prefix}:{prop}")
            xmp = re.sub(rf"<{name}\b[^>]*?/>", "", xmp)
            xmp = re.sub(rf"<{name}\b[^>]*>.*?</{name}\s*>", "", xmp, flags=re.S)
            xmp = re.sub(rf"\s{name}\s*=\s*(\"[^\"]*\"|'[^']*')", "", xmp)
    return xmp


def with_opt_out(xmp: bytes | None, opt_out: OptOut) -> bytes:
    """XMP holding ``opt_out``'s IPTC Data Mining statement, and everything ``xmp`` held besides.

    ``xmp``: the packet carried from the input (UTF-8 bytes) or None. The statement is a new
    ``rdf:Description`` in the packet's ``rdf:RDF`` (whatever prefix the packet gives the RDF
    namespace); a packet with no RDF element at all (not XMP) is replaced by a new one.
    """
    text = (xmp or b"").decode("utf-8", "replace")
    rdf = _rdf_prefix(text)
    if rdf is None:
        text, rdf = _EMPTY_XMP.decode("utf-8"), "rdf"
    text = _without_plus(text)
    props = f"  <plus:DataMining>{escape(opt_out.iptc_uri)}</plus:DataMining>\n"
    if opt_out.text:
        props += (
            f"  <plus:OtherConstraints><{rdf}:Alt><{rdf}:li xml:lang=\"x-default\">"
            f"{escape(opt_out.text)}</{rdf}:li></{rdf}:Alt></plus:OtherConstraints>\n"
        )
    block = f' <{rdf}:Description {rdf}:about="" xmlns:plus="{PLUS_NS}">\n{props} </{rdf}:Description>\n'
    end = list(re.finditer(rf"</{re.escape(rdf)}:RDF\s*>", text))[-1]
    return (text[: end.start()] + block + text[end.start() :]).encode("utf-8")


def _rdf_prefix(xmp: str) -> str | None:
    """The prefix ``xmp`` binds to the RDF namespace, if it has an RDF element closed with it."""
    for prefix in re.findall(r'xmlns:([\w.-]+)\s*=\s*["\']' + re.escape(RDF_NS) + r'["\']', xmp):
        if re.search(rf"</{re.escape(prefix)}:RDF\s*>", xmp):
            return prefix
    return None


def read_opt_out(xmp: bytes | str | None) -> str | None:
    """The plus:DataMining URI in ``xmp`` (element or attribute form), or None."""
    if not xmp:
        return None
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    for prefix in set(re.findall(r'xmlns:([\w.-]+)\s*=\s*["\']' + re.escape(PLUS_NS) + r'["\']', text)):
        name = re.escape(f"{prefix}:DataMining")
        found = re.search(rf"<{name}\b[^>]*>\s*([^<]*?)\s*</{name}\s*>", text) or re.search(
            rf"\s{name}\s*=\s*[\"']([^\"']*)[\"']", text)
        if found:
            return found.group(1)
    return None
