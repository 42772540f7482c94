"""``fixative identity create|show`` and the trust and signer lines of ``fixative verify``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fixative.errors import ConfigError

log = logging.getLogger("fixative")


#: the flags of ``fixative identity create`` for the fields that the library's errors name
IDENTITY_FLAGS = {"identity.name": "--name", "identity.years": "--years", "identity.force": "--force"}

def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fixative identity`` (``create``, ``show``) to the command line's subcommands."""
    from fixative.provenance.identity import DEFAULT_YEARS

    p = sub.add_parser("identity", help="your signing identity for Content Credentials",
                       description="Make or show the key and certificate that sign your protected files' Content "
                                   "Credentials and portfolio index. Kept in your per-user config folder "
                                   "($FIXATIVE_CONFIG_DIR overrides it), readable only by you.")
    actions = p.add_subparsers(dest="identity_command", required=True)
    c = actions.add_parser("create", help="make a new signing key and certificate chain",
                           description="Make an ECDSA P-256 key (ES256) and a certificate chain naming you: a root "
                                       "made for this identity alone (its key is not kept) and your signing "
                                       "certificate.")
    c.add_argument("--name", required=True, help="your name as signers are shown (the certificate's common name)")
    c.add_argument("--out", type=Path, help="where to keep it (default: the per-user config folder)")
    c.add_argument("--years", type=int, default=DEFAULT_YEARS,
                   help=f"validity of the signing certificate in years (default {DEFAULT_YEARS})")
    c.add_argument("--force", action="store_true", help="replace an identity that is already there")
    c.set_defaults(handler=_create, flags=IDENTITY_FLAGS)
    s = actions.add_parser("show", help="show the signing identity in use")
    s.add_argument("--identity", type=Path, metavar="PATH", help="an identity folder or PEM file (default: yours)")
    s.set_defaults(handler=_show)


def _create(args: argparse.Namespace) -> int:
    from fixative.provenance.identity import (
        CHAIN_NAME,
        KEY_NAME,
        ROOT_NAME,
        create_identity,
        default_identity_dir,
        identity_summary,
    )

    identity = create_identity(args.name, args.out, years=args.years, force=args.force)
    folder = args.out or default_identity_dir()
    print(f"identity created: {identity_summary(identity)}")
    print(f"  private key: {folder / KEY_NAME} (only you can read it; never share it)")
    print(f"  certificate chain: {folder / CHAIN_NAME} (public: give it to whoever checks your files)")
    print(f"  root certificate: {folder / ROOT_NAME} (public: a trust anchor for 'fixative verify --trust' and "
          "c2patool's --trust_anchors)")
    print("  from now on 'fixative protect' signs every output with Content Credentials (--no-credentials skips)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from fixative.provenance.identity import default_identity_dir, find_identity, identity_summary

    identity = find_identity(args.identity)
    if identity is None:
        print(f"no signing identity in {default_identity_dir()}; make one with: "
              "fixative identity create --name \"Your Name\"")
        return 1
    print(f"{identity_summary(identity)}, {identity.alg}, from {identity.source}")
    print(f"  certificate SHA-256: {identity.fingerprint}")
    return 0


def trust_anchors(files: list[Path]) -> list[str]:
    """PEM trust anchors for ``verify``: your own identity's certificates and those of ``files``."""
    from fixative.provenance.identity import find_identity, load_chain

    anchors = []
    try:
        own = find_identity()
    except ConfigError as exc:
        log.warning("your identity is not used as a trust anchor: %s", exc)
        own = None
    if own is not None:
        anchors.append(own.chain_pem)
    for path in files:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--trust {path}: cannot read it ({exc})") from exc
        load_chain(text)
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError(f"--trust {path}: no PEM certificate in it")
        anchors.append(text)
    return anchors


def signature_lines(report) -> list[str]:
    """Lines for ``fixative verify``: who signed the outputs and the index, trusted or not."""
    lines = []
    signers: dict[tuple, list[str]] = {}
    for name, signed in report.signed.items():
        signers.setdefault((signed["signer"], signed["serial"], signed["trusted"]), []).append(name)
    for (signer, _serial, trusted), names in signers.items():
        lines.append(f"Content Credentials: {len(names)} output(s) signed by {signer!r}, "
                     + ("trusted signer" if trusted else
                        "untrusted signer (its certificate chains to no trust anchor here; pass the signer's "
                        "chain.pem with --trust)"))
    sig = report.index_signature
    if sig is not None and sig["valid"]:
        lines.append(f"index signature: signed by {sig['signer']!r}, "
                     + ("trusted signer" if sig["trusted"] else "untrusted signer")
                     + ("" if sig["matches"] else "; the index differs from what was signed"))
    elif sig is None and not report.signed:
        lines.append("not signed: these outputs carry no Content Credentials (hashes only)")
    return lines
