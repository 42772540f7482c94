"""The user's signing identity: a private key and the certificate chain that names them.

``fixative identity create --name "..."`` makes one locally (:func:`create_identity`): an ECDSA
P-256 key (C2PA's ``es256``) and a two-certificate chain, a root made for this identity alone
and an end-entity certificate with the extensions C2PA asks of a signer (digitalSignature key
usage, the emailProtection extended key usage, not a CA, subject and authority key ids). The
root's key signs the end-entity certificate and is then thrown away: it is never written, so
nobody (the user included) can issue another certificate under that root.

Where it lives: ``identity/`` in the per-user config folder (``$FIXATIVE_CONFIG_DIR``, else
platformdirs' user config dir for ``fixative``), the folder 0700 and the key 0600. ``--identity
PATH`` uses another one: such a folder, or a PEM file holding the chain and the key (one issued
by a real CA, for instance: RSA-PSS, P-256/P-384/P-521 and Ed25519 keys are all understood).

No key is ever built in or shared: every identity is made on the user's machine.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fixative.errors import ConfigError
from fixative.files.atomic import atomic_write_text

log = logging.getLogger("fixative")

KEY_NAME = "key.pem"
CHAIN_NAME = "chain.pem"
ROOT_NAME = "root.pem"  # the chain's root alone: what trust-anchor lists (c2patool's --trust_anchors) take
INFO_NAME = "identity.json"
ROOT_YEARS = 10
DEFAULT_YEARS = 5


def default_identity_dir() -> Path:
    """Where ``fixative identity create`` puts the identity and where ``protect`` looks for it."""
    from fixative.userdirs import user_config_dir

    return user_config_dir() / "identity"


@dataclass(frozen=True)
class Identity:
    """A loaded signing identity: the key and chain as PEM text, and what they say."""

    name: str  # the end-entity certificate's common name
    key_pem: str
    chain_pem: str  # end-entity first, then its issuers
    alg: str  # C2PA algorithm name: es256, es384, es512, ps256, ed25519
    fingerprint: str  # hex SHA-256 of the end-entity certificate (DER)
    not_after: str  # ISO 8601
    source: Path

    @property
    def certificate_pem(self) -> str:
        """The public certificate chain (what the GUI's zip and a verifier need; no key)."""
        return self.chain_pem

    def sign(self, data: bytes) -> bytes:
        """A detached signature of ``data`` with this identity's key (the ``alg`` scheme)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        key = serialization.load_pem_private_key(self.key_pem.encode("ascii"), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(_hash_for_curve(key.curve)))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size),
                            hashes.SHA256())
        return key.sign(data)  # Ed25519


def _hash_for_curve(curve):
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384()}.get(curve.key_size, hashes.SHA512())


def verify_signature(chain_pem: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``data`` was made with the key of ``chain_pem``'s first certificate."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    public = load_chain(chain_pem)[0].public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(_hash_for_curve(public.curve)))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size),
                          hashes.SHA256())
        else:
            public.verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def load_chain(chain_pem: str) -> list:
    """The certificates of a PEM chain, in order (ConfigError when there are none)."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode("ascii"))
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate chain ({exc})") from exc
    return certs


def fingerprint(cert) -> str:
    """Hex SHA-256 of a certificate's DER bytes."""
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(cert) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fixative local identity")])


def _key_usage(*, signing: bool):
    from cryptography import x509

    return x509.KeyUsage(digital_signature=signing, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signing,
                         crl_sign=not signing, encipher_only=False, decipher_only=False)


def make_chain(name: str, years: int = DEFAULT_YEARS) -> tuple[str, str]:
    """A new P-256 key and its chain (end-entity, root) for ``name``: (key PEM, chain PEM).

    ``years``: validity of the end-entity certificate (1-30); the root is valid for at least as long.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not name.strip():
        raise ConfigError("identity.name is empty: the identity needs a name (\"Your Name\")", field="identity.name")
    if not 1 <= years <= 30:
        raise ConfigError(f"identity.years must be between 1 and 30, got {years}", field="identity.years")
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{name.strip()} (Fixative root)")
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=365 * max(ROOT_YEARS, years) + 3))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(_name(name.strip())).issuer_name(root_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=365 * years + 1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return key_pem, (leaf.public_bytes(pem) + root.public_bytes(pem)).decode()


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` atomically to a file with ``mode`` (its temporary is 0600: never readable by others)."""
    atomic_write_text(path, text, encoding="ascii", mode=mode)


def create_identity(name: str, folder: Path | None = None, *, years: int = DEFAULT_YEARS,
                    force: bool = False) -> Identity:
    """Make a new identity for ``name`` in ``folder`` (default :func:`default_identity_dir`).

    Refuses to replace an existing one unless ``force`` (files signed with the old key stay
    verifiable by their embedded certificates). The folder is made 0700, the key 0600.
    """
    folder = Path(folder) if folder is not None else default_identity_dir()
    if (folder / KEY_NAME).exists() and not force:
        raise ConfigError(f"{folder}: an identity is already there ({identity_summary(load_identity(folder))}); "
                          "set identity.force to replace it", field="identity.force")
    key_pem, chain_pem = make_chain(name, years)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    _write_private(folder / KEY_NAME, key_pem, 0o600)
    _write_private(folder / CHAIN_NAME, chain_pem, 0o644)
    _write_private(folder / ROOT_NAME, _pem_blocks(chain_pem)[-1] + "\n", 0o644)
    info = {"name": name.strip(), "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "algorithm": "es256", "made_by": "fixative identity create"}
    _write_private(folder / INFO_NAME, json.dumps(info, indent=2) + "\n", 0o644)
    return load_identity(folder)


def _alg_of(key) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {256: "es256", 384: "es384", 521: "es512"}
        if key.curve.key_size not in algs:
            raise ConfigError(f"EC curve {key.curve.name} is not one C2PA signs with (P-256, P-384, P-521)")
        return algs[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ConfigError(f"{type(key).__name__} keys cannot sign C2PA manifests")


def load_identity(path: Path) -> Identity:
    """The identity at ``path``: a folder with ``key.pem`` and ``chain.pem``, or one PEM file with both.

    ConfigError (naming the file and the problem) when something is missing, unreadable, or
    when the key does not belong to the chain's first certificate.
    """
    from cryptography.hazmat.primitives import serialization

    path = Path(path).expanduser()
    if path.is_dir():
        key_file, chain_file = path / KEY_NAME, path / CHAIN_NAME
        for needed in (key_file, chain_file):
            if not needed.is_file():
                raise ConfigError(f"{needed}: missing (an identity folder holds {KEY_NAME} and {CHAIN_NAME})")
    elif path.is_file():
        key_file = chain_file = path
    else:
        raise ConfigError(f"{path}: no such identity (make one with: fixative identity create --name \"Your Name\")")
    try:
        key_text, chain_text = key_file.read_text(encoding="ascii"), chain_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key_file}: cannot read the identity ({exc})") from exc
    blocks = _pem_blocks(key_text)
    key_block = next((b for b in blocks if "PRIVATE KEY" in b.splitlines()[0]), None)
    if key_block is None:
        raise ConfigError(f"{key_file}: no private key in it")
    try:
        key = serialization.load_pem_private_key(key_block.encode("ascii"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_file}: unreadable private key ({exc}; encrypted keys are not supported)") from exc
    cert_blocks = [b for b in _pem_blocks(chain_text) if b.startswith("-----BEGIN CERTIFICATE-----")]
    if not cert_blocks:
        raise ConfigError(f"{chain_file}: no certificate in it")
    chain_pem = "".join(b + "\n" for b in cert_blocks)
    certs = load_chain(chain_pem)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != certs[0].public_key().public_bytes(der, pub):
        raise ConfigError(f"{key_file}: the private key does not belong to the first certificate of {chain_file.name}")
    # PKCS#8 for the c2pa library, whatever form the file used
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    return Identity(name=common_name(certs[0]), key_pem=pkcs8, chain_pem=chain_pem, alg=_alg_of(key),
                    fingerprint=fingerprint(certs[0]), not_after=certs[0].not_valid_after_utc.isoformat(),
                    source=path)


def _pem_blocks(text: str) -> list[str]:
    import re

    return re.findall(r"-----BEGIN [A-Z0-9 ]+-----[\s\S]+?-----END [A-Z0-9 ]+-----", text)


def find_identity(path: Path | None = None) -> Identity | None:
    """``path``'s identity when given, else the default one if it exists, else None (nothing to sign with)."""
    if path is not None:
        return load_identity(path)
    folder = default_identity_dir()
    try:
        present = (folder / KEY_NAME).is_file()
    except OSError as exc:  # e.g. a config folder this user may not enter: no identity to sign with, said once
        log.warning("%s: cannot be read (%s), so no signing identity is used", folder, exc.strerror or exc)
        return None
    return load_identity(folder) if present else None


def identity_summary(identity: Identity) -> str:
    """One line: the name, the certificate's fingerprint (first 16 hex digits) and its end of validity."""
    return f"{identity.name} (certificate {identity.fingerprint[:16]}, valid until {identity.not_after[:10]})"
