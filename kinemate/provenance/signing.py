"""Signing credentials for C2PA manifests.

A user may configure a certificate chain and private key (PEM):

* environment variables ``KINEMATE_C2PA_CERT`` and ``KINEMATE_C2PA_KEY`` (paths), optionally
  ``KINEMATE_C2PA_ALG`` (``es256`` default; ``es384``, ``es512``, ``ps256``, ``ed25519``...)
  and ``KINEMATE_C2PA_TSA_URL`` (a timestamp authority; none by default, kinemate works
  offline);
* or a config file ``<config dir>/c2pa.json`` with keys ``cert``, ``key``, ``alg``,
  ``tsa_url`` (paths relative to the file).

Without one, kinemate creates — once — a local certificate authority and a signing
certificate issued by it (ECDSA P-256, ES256), stored under ``<config dir>/c2pa-local/``.
C2PA validators refuse self-signed end-entity certificates, hence the two-level chain. Such a
signature proves integrity (the file was not changed after kinemate wrote it) but not who
made it: nobody else trusts this local CA, so verifiers report the signer as untrusted, and
kinemate's own manifest says ``"signing": "local-untrusted"``.

The config dir is ``$KINEMATE_HOME`` if set, else ``$XDG_CONFIG_HOME/kinemate``, else
``~/.config/kinemate``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from kinemate.errors import ConfigError
from kinemate.io.atomic import atomic_path

LOCAL_DIR = "c2pa-local"
LOCAL_ORG = "kinemate local signing (untrusted)"


def config_dir() -> Path:
    """Where kinemate keeps per-user configuration and generated keys."""
    home = os.environ.get("KINEMATE_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "kinemate"


@dataclass(frozen=True)
class SigningCredentials:
    """A PEM certificate chain (leaf first) and private key, with the algorithm to use."""

    cert_chain_pem: bytes
    key_pem: bytes
    alg: str = "es256"
    tsa_url: str | None = None
    local: bool = False  # True: kinemate's own local untrusted CA
    source: str = ""  # where the credentials came from (for reports)

    @property
    def signing_kind(self) -> str:
        return "local-untrusted" if self.local else "configured"

    def make_signer(self):
        """A ``c2pa.Signer`` for these credentials."""
        from .c2pa_lib import import_c2pa

        c2pa = import_c2pa()

        try:
            info = c2pa.C2paSignerInfo(
                self.alg.encode(), self.cert_chain_pem, self.key_pem,
                self.tsa_url.encode() if self.tsa_url else None,
            )
            return c2pa.Signer.from_info(info)
        except Exception as exc:  # c2pa raises its own error family
            raise ConfigError(
                f"cannot create a C2PA signer from {self.source or 'the credentials'}: {exc}. "
                "Check that KINEMATE_C2PA_CERT is a PEM chain (signing certificate first) and "
                "KINEMATE_C2PA_KEY its PEM private key, and that KINEMATE_C2PA_ALG matches the key."
            ) from exc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the C2PA {what} {path}: {exc.strerror}. "
            "Fix the path, or unset it to use a locally generated key."
        ) from exc


def load_credentials(create: bool = True) -> SigningCredentials | None:
    """The configured credentials, else the local ones (created if ``create``)."""
    cert = os.environ.get("KINEMATE_C2PA_CERT")
    key = os.environ.get("KINEMATE_C2PA_KEY")
    alg = os.environ.get("KINEMATE_C2PA_ALG", "es256").lower()
    tsa = os.environ.get("KINEMATE_C2PA_TSA_URL") or None
    if cert or key:
        if not (cert and key):
            raise ConfigError(
                "KINEMATE_C2PA_CERT and KINEMATE_C2PA_KEY must be set together "
                "(PEM certificate chain and PEM private key); set both or neither."
            )
        return SigningCredentials(
            _read(Path(cert), "certificate"), _read(Path(key), "private key"), alg, tsa,
            local=False, source="KINEMATE_C2PA_CERT/KINEMATE_C2PA_KEY",
        )
    cfg = config_dir() / "c2pa.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
            base = cfg.parent
            return SigningCredentials(
                _read(base / data["cert"], "certificate"),
                _read(base / data["key"], "private key"),
                str(data.get("alg", "es256")).lower(),
                data.get("tsa_url") or None,
                local=False,
                source=str(cfg),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{cfg} is not a valid C2PA signing config ({exc}); it must be JSON with "
                '"cert" and "key" paths (and optional "alg", "tsa_url"). Fix or delete it.'
            ) from exc
    return local_credentials(create=create)


def local_credentials(create: bool = True) -> SigningCredentials | None:
    """kinemate's local CA-issued signing credentials, generated on first use."""
    d = config_dir() / LOCAL_DIR
    chain, key = d / "chain.pem", d / "signer.key"
    if not (chain.is_file() and key.is_file()):
        if not create:
            return None
        _generate_local(d)
    return SigningCredentials(
        chain.read_bytes(), key.read_bytes(), "es256", None, local=True, source=str(d)
    )


def _generate_local(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    host = socket.gethostname() or "localhost"

    def name(cn: str) -> x509.Name:
        return x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, LOCAL_ORG),
        ])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"kinemate local CA ({host})")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(name(f"kinemate local signer ({host})")).issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    key_bytes = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Both written under temporary names and renamed (the key first) only when both are
    # complete: never a half-written key pair. The key's temporary file is created 0o600,
    # so the private key is never readable by others, not even for a moment.
    with atomic_path(d / "chain.pem") as tmp_chain, \
            atomic_path(d / "signer.key", mode=0o600) as tmp_key:
        fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_bytes)
        tmp_chain.write_bytes(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
        (d / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
