"""Content Credentials: a signed C2PA manifest in every protected file, and a signed portfolio index.

Signing (:func:`sign_image`) puts a C2PA manifest into the encoded file's bytes, in memory,
before the output's SHA-256 is taken (so the record and ``fixative verify`` agree). Its
assertions:

- ``c2pa.actions.v2``: ``c2pa.opened`` of the original (the ``parentOf`` ingredient, with its
  SHA-256 hash binding), then ``c2pa.edited`` by Fixative (its version as software agent);
- ``cawg.training-mining``: the uses the ``--opt-out`` forbids (see :mod:`fixative.provenance.optout`);
- ``org.fixative.protection``: the protection's settings and measured strength (mode, encoders,
  budget, pixel cap, steps, robustness, FLIP, LPIPS, distance ratios, latent distances).

No thumbnail is embedded, neither of the output nor of the original: a thumbnail of the
original would put an unprotected copy of the artwork inside the protected file. The manifest's
hard binding (``c2pa.hash.data``) covers every byte of the file outside the manifest, so a change
to the pixels or to the other metadata breaks it.

Verification (:func:`read_credentials`) reads a manifest with the ``c2pa`` library, offline (no
remote manifests, no OCSP, no timestamp authority), and reports whether the signature is valid,
whether the bytes are still bound to it, who signed, and whether the signer chains to a trust
anchor (the local identity's root and any ``--trust`` certificates).

The portfolio index is signed too (:func:`sign_index`): ``fixative-index.sig`` beside
``fixative-index.json`` holds the index's exact bytes, a signature over them with the identity's
key, and the certificate chain; :func:`check_index_signature` names every entry that differs
from what was signed, so rewriting a file, its record and the index together is detected.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from fixative import __version__
from fixative.errors import FixativeError
from fixative.provenance.identity import Identity, common_name, fingerprint, load_chain, verify_signature
from fixative.provenance.optout import CAWG_LABEL, OptOut

log = logging.getLogger("fixative")

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
PROTECTION_LABEL = "org.fixative.protection"
ACTIONS_LABEL = "c2pa.actions.v2"
INDEX_SIGNATURE_NAME = "fixative-index.sig"
_ORIGINAL_ID = "fixative.original"


class CredentialsError(FixativeError):
    """Signing or reading Content Credentials failed (the message says which file and why)."""


def _settings(anchors: list[str] | None = None) -> dict:
    """c2pa settings: offline (no remote manifest, OCSP or timestamp fetch), no thumbnails, our anchors."""
    settings: dict = {
        "version": 1,
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_trust": True},
        "builder": {"thumbnail": {"enabled": False}},
    }
    if anchors:
        settings["trust"] = {"user_anchors": "".join(a if a.endswith("\n") else a + "\n" for a in anchors)}
    return settings


def _context(anchors: list[str] | None = None):
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict(_settings(anchors)))


def protection_assertion(record: dict) -> dict:
    """The ``org.fixative.protection`` assertion's data, from an output's record (settings and metrics)."""
    settings, metrics = record.get("settings") or {}, record.get("metrics") or {}
    run = record.get("run_settings") or {}
    robust = run.get("robust")
    data = {
        "fixative": record.get("fixative"),
        "mode": record.get("mode"),
        "objective": (run.get("target") or {}).get("objective"),
        "target": (run.get("target") or {}).get("kind"),
        "encoders": list(record.get("encoders") or []),
        "method": run.get("method"),
        # the budget: "visibility" (no more visible than the image's own JPEG at quality like_jpeg, by FLIP)
        # or "lpips" (budget_lpips)
        "budget_kind": run.get("budget_kind"),
        "like_jpeg_budget": run.get("like_jpeg"),
        "budget_lpips": run.get("budget"),
        "linf_cap": run.get("linf"),
        "steps": metrics.get("steps", settings.get("steps")),
        "robust": robust.get("level") if isinstance(robust, dict) else robust,
        "platform": (robust.get("platform") or {}).get("name") if isinstance(robust, dict) else None,
        "lpips": metrics.get("lpips"),
        "flip": metrics.get("flip"),
        "linf": metrics.get("linf"),
        "psnr_db": metrics.get("psnr"),
        "distance_ratio": metrics.get("mean_ratio"),
        "distance_ratio_per_encoder": metrics.get("ratio"),
        # for "away" (no target, so no ratio): how far each encoder's latent moved from the original's
        "latent_distance_per_encoder": metrics.get("distance_after"),
    }
    compressed = record.get("compressed")
    if compressed:
        data["after_compression"] = {"format": compressed.get("format"), "quality": compressed.get("quality"),
                                     "lpips": compressed.get("lpips"), "distance_ratio": compressed.get("mean_ratio")}
    return _json_ready(data)


def _json_ready(value):
    """``value`` with non-finite floats as None (CBOR and JSON disagree on them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def manifest_definition(title: str, protection: dict, opt_out: OptOut) -> dict:
    """The C2PA manifest definition (the c2pa library's JSON form) of one protected file."""
    assertions = [
        {"label": ACTIONS_LABEL, "data": {"actions": [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": [_ORIGINAL_ID]}},
            {"action": "c2pa.edited",
             "softwareAgent": {"name": "Fixative", "version": __version__},
             "description": "An imperceptible protective perturbation against generative-AI mimicry "
                            f"({protection.get('mode')}) was added to the pixels."},
        ]}},
    ]
    entries = opt_out.cawg_entries()
    if entries:
        assertions.append({"label": CAWG_LABEL, "data": {"entries": entries}})
    assertions.append({"label": PROTECTION_LABEL, "data": protection})
    return {
        "claim_generator_info": [{"name": "Fixative", "version": __version__}],
        "title": title,
        "assertions": assertions,
    }


def sign_image(data: bytes, fmt: str, original: Path, identity: Identity, *, title: str, protection: dict,
               opt_out: OptOut) -> tuple[bytes, dict]:
    """``data`` (an encoded ``fmt`` file) with a signed C2PA manifest, and what the record keeps of it.

    ``original``: the input file, added as the parent ingredient (its hash, and its own manifest
    if it has one). Raises :class:`CredentialsError` when the c2pa library refuses.
    """
    import c2pa

    mime = MIME_TYPES[fmt]
    definition = manifest_definition(title, protection, opt_out)
    original_mime = MIME_TYPES.get(SUFFIX_FORMATS.get(original.suffix.lower(), ""))
    try:
        with c2pa.Builder(json.dumps(definition), context=_context()) as builder:
            ingredient = {"title": original.name, "relationship": "parentOf", "label": _ORIGINAL_ID}
            if original_mime is not None:
                with open(original, "rb") as fh:
                    builder.add_ingredient(ingredient, original_mime, fh)
            else:  # BMP, GIF...: the library cannot parse it, so the ingredient is described, not read
                ingredient.update(format=f"image/{original.suffix.lstrip('.').lower() or 'unknown'}")
                builder.add_ingredient(ingredient, "application/octet-stream", io.BytesIO(b""))
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(identity.alg, identity.chain_pem.encode("ascii"),
                                                               identity.key_pem.encode("ascii"), None))
            out = io.BytesIO()
            builder.sign(signer, mime, io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        raise CredentialsError(f"signing the Content Credentials failed: {exc}") from exc
    signed = out.getvalue()
    leaf = load_chain(identity.chain_pem)[0]
    entry = {
        "signer": identity.name,
        "issuer": _organisation(leaf.issuer),
        "serial": str(leaf.serial_number),
        "certificate_sha256": identity.fingerprint,
        "algorithm": identity.alg,
        "assertions": [a["label"] for a in definition["assertions"]],
        "protection": protection,
        "training_mining": opt_out.cawg_entries(),
    }
    return signed, entry


def _organisation(name) -> str | None:
    from cryptography.x509.oid import NameOID

    orgs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(orgs[0].value) if orgs else None


# --- reading and checking ----------------------------------------------------------------------


@dataclass
class Credentials:
    """What :func:`read_credentials` found in a file's manifest.

    ``state``: ``trusted`` (valid, signer chains to an anchor), ``valid`` (valid, signer not
    trusted here), ``invalid`` (``failures`` says why). ``bound``: the file's bytes still match the
    hash in the manifest. ``signature_ok``: the claim's signature verifies.
    """

    state: str
    failures: list[str]
    signer: str | None
    issuer: str | None
    serial: str | None
    assertions: dict[str, object] = field(default_factory=dict)
    label: str | None = None

    @property
    def bound(self) -> bool:
        return not any(code.startswith(("assertion.dataHash", "assertion.boxesHash", "assertion.bmffHash"))
                       for code in self.failures)

    @property
    def signature_ok(self) -> bool:
        return not any(code.startswith(("claimSignature", "signingCredential.invalid", "assertion.hashedURI"))
                       for code in self.failures)

    @property
    def trusted(self) -> bool:
        return self.state == "trusted"


def read_credentials(data: bytes, fmt: str, anchors: list[str] | None = None) -> Credentials | None:
    """The Content Credentials of ``data`` (an encoded ``fmt`` file), or None where it has none.

    ``anchors``: PEM certificates whose holders are trusted signers (or issuers of signers).
    A manifest the library cannot parse at all counts as ``invalid``.
    """
    import c2pa

    try:
        reader = c2pa.Reader.try_create(MIME_TYPES[fmt], io.BytesIO(data), None, _context(anchors))
    except c2pa.C2paError as exc:
        return Credentials("invalid", [f"unreadable: {exc}"], None, None, None)
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) or {}
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    listed = results.get("failure", []) if results else store.get("validation_status", [])
    failures = [f["code"] for f in listed if f.get("code") != "signingCredential.untrusted"]
    trusted = any(s.get("code") == "signingCredential.trusted" for s in results.get("success", []))
    state = "invalid" if failures else "trusted" if trusted else "valid"
    info = manifest.get("signature_info") or {}
    assertions = {a.get("label"): a.get("data") for a in manifest.get("assertions", [])}
    return Credentials(state, failures, info.get("common_name"), info.get("issuer"),
                       str(info["cert_serial_number"]) if info.get("cert_serial_number") else None, assertions, label)


def same_data(a, b, rel: float = 1e-9) -> bool:
    """``a == b`` for JSON data, floats compared to ``rel`` (a CBOR round trip may change their last bit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_data(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return a == b


def manifest_differences(found: Credentials, recorded: dict) -> list[str]:
    """How the manifest ``found`` in a file differs from the ``credentials`` part of its record."""
    problems = []
    if found.serial != recorded.get("serial") or found.signer != recorded.get("signer"):
        problems.append(f"signed by {found.signer!r} (certificate serial {found.serial}), but the record says "
                        f"{recorded.get('signer')!r} ({recorded.get('serial')})")
    if not same_data(found.assertions.get(PROTECTION_LABEL), recorded.get("protection")):
        problems.append(f"its {PROTECTION_LABEL} assertion differs from the record")
    cawg = found.assertions.get(CAWG_LABEL)
    if not same_data((cawg or {}).get("entries", {}) if isinstance(cawg, dict) else {},
                     recorded.get("training_mining") or {}):
        problems.append(f"its {CAWG_LABEL} assertion differs from the record's opt-out")
    return problems


def pixels_sha256(data: bytes) -> str:
    """Hex SHA-256 of an encoded image's decoded samples (with their shape and type).

    The same pixels give the same value whatever metadata the file holds, so a file whose
    manifest was stripped can be told from one whose pixels were changed.
    """
    import imagecodecs
    import numpy as np

    pixels = np.ascontiguousarray(imagecodecs.imread(data))
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype.str}|".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


# --- the portfolio index ----------------------------------------------------------------------


def sign_index(folder: Path, index_bytes: bytes, identity: Identity) -> None:
    """Write ``folder/fixative-index.sig``: the index's bytes, their signature and the signer's chain."""
    from fixative.files.atomic import atomic_write_json
    from fixative.provenance.records import now

    envelope = {
        "fixative": __version__,
        "signed": now(),
        "algorithm": identity.alg,
        "signer": identity.name,
        "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
        "index": base64.b64encode(index_bytes).decode("ascii"),
        "signature": base64.b64encode(identity.sign(index_bytes)).decode("ascii"),
        "certificates": identity.chain_pem,
    }
    atomic_write_json(folder / INDEX_SIGNATURE_NAME, envelope)


@dataclass
class IndexSignature:
    """The check of ``fixative-index.sig``: ``valid`` signature, who signed, whether trusted, and
    ``changed``: index entries (output names) that differ from the signed ones (``added`` /
    ``removed``: entries only in the current index / only in the signed one)."""

    valid: bool
    signer: str | None = None
    serial: str | None = None
    trusted: bool = False
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def matches(self) -> bool:
        return self.valid and not (self.changed or self.added or self.removed)


def chain_trusted(certs: list, anchors: list[str]) -> bool:
    """True when each certificate of ``certs`` is issued by the next and the last is, or is issued by, an anchor."""
    anchor_certs = [c for pem in anchors for c in load_chain(pem)]
    prints = {fingerprint(c) for c in anchor_certs}
    try:
        for child, parent in zip(certs, certs[1:], strict=False):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False
    last = certs[-1]
    if fingerprint(last) in prints or any(fingerprint(c) in prints for c in certs):
        return True
    for anchor in anchor_certs:
        try:
            last.verify_directly_issued_by(anchor)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not issued by this anchor"
            continue
    return False


def check_index_signature(folder: Path, index_bytes: bytes | None, anchors: list[str]) -> IndexSignature | None:
    """Check ``folder/fixative-index.sig`` against the current index bytes; None where there is no signature."""
    path = folder / INDEX_SIGNATURE_NAME
    if not path.is_file():
        return None
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
        signed = base64.b64decode(envelope["index"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
        certs = load_chain(envelope["certificates"])
    except (OSError, ValueError, KeyError, TypeError, FixativeError) as exc:
        return IndexSignature(False, reason=f"unreadable signature file ({type(exc).__name__}: {exc})")
    leaf = certs[0]
    result = IndexSignature(verify_signature(envelope["certificates"], signed, signature), common_name(leaf),
                            str(leaf.serial_number), chain_trusted(certs, anchors))
    if not result.valid:
        result.reason = "the signature does not match the signed index (the signature file was altered)"
        return result
    try:
        signed_entries = json.loads(signed)["entries"]
        current = json.loads(index_bytes)["entries"] if index_bytes is not None else {}
        if not isinstance(signed_entries, dict) or not isinstance(current, dict):
            raise TypeError("its 'entries' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        result.valid, result.reason = False, f"unreadable index ({exc})"
        return result
    result.changed = sorted(n for n in signed_entries.keys() & current.keys() if signed_entries[n] != current[n])
    result.added = sorted(current.keys() - signed_entries.keys())
    result.removed = sorted(signed_entries.keys() - current.keys())
    return result
