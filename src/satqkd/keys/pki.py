"""Demo PKI for ETSI GS QKD 014 mutual TLS: a CA, KME certificates and SAE certificates.

ETSI GS QKD 014 V1.1.1 §5 requires HTTPS with mutual authentication; the SAE's (and KME's)
identity is the certificate's subject common name. Layout written under ``dir``::

    ca.pem  ca.key                  the demo certificate authority (ECDSA P-256)
    kme/<id>.pem  kme/<id>.key       KME certificates: serverAuth + clientAuth, SAN = hosts
    sae/<id>.pem  sae/<id>.key       SAE certificates: clientAuth

Private keys are written with mode 0600. Certificates carry basicConstraints, keyUsage and the
subject/authority key identifiers, so they pass OpenSSL's strict X.509 checks (Python ≥ 3.13
``create_default_context``). An existing CA in ``dir`` is reused, so SAEs can be added later.
This is a *demo* PKI: no revocation, no passphrases.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PKI", "make_certs", "load_pki", "cert_common_name"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PKI:
    """Paths of a demo PKI: ``kmes`` and ``saes`` map an id to ``(cert, key)``."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    kmes: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    saes: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"PKI({self.dir}: CA, KMEs {sorted(self.kmes)}, SAEs {sorted(self.saes)})"


def _check_id(i: str, what: str) -> str:
    if not isinstance(i, str) or not _ID.match(i):
        raise ValueError(f"{what} id must match {_ID.pattern} (letters, digits, '.', '_', '-'), got {i!r}")
    return i


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(cn: str, ou: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "satqkd demo"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _ca(dir_: Path, days: int):
    cert_p, key_p = dir_ / "ca.pem", dir_ / "ca.key"
    if cert_p.exists() and key_p.exists():
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        key = serialization.load_pem_private_key(key_p.read_bytes(), None)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    name = _name("satqkd demo CA", "CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_p, key)
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _leaf(ca_cert, ca_key, cn: str, role: str, hosts: tuple[str, ...], days: int, out_dir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if role == "KME" else [])
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if role == "KME":
        alt = []
        for h in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                alt.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    cp, kp = out_dir / f"{cn}.pem", out_dir / f"{cn}.key"
    _write_key(kp, key)
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cp, kp


def make_certs(
    dir: str | Path,
    sae_ids: list[str] | tuple[str, ...],
    kme_ids: list[str] | tuple[str, ...],
    *,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 365,
) -> PKI:
    """Create (or extend) a demo PKI in ``dir``: CA, one certificate per KME id and per SAE id.

    >>> import tempfile
    >>> pki = make_certs(tempfile.mkdtemp(), ["sae-a"], ["kme-a"])
    >>> sorted(pki.saes), cert_common_name(pki.kmes["kme-a"][0])
    (['sae-a'], 'kme-a')
    """
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    if days < 1:
        raise ValueError(f"days must be ≥ 1, got {days}")
    sae_ids = [_check_id(i, "SAE") for i in sae_ids]
    kme_ids = [_check_id(i, "KME") for i in kme_ids]
    if set(sae_ids) & set(kme_ids):
        raise ValueError(f"an id cannot be both an SAE and a KME: {sorted(set(sae_ids) & set(kme_ids))}")
    ca_cert, ca_key = _ca(d, days)
    for i in kme_ids:
        _leaf(ca_cert, ca_key, i, "KME", tuple(hosts), days, d / "kme")
    for i in sae_ids:
        _leaf(ca_cert, ca_key, i, "SAE", tuple(hosts), days, d / "sae")
    return load_pki(d)


def load_pki(dir: str | Path) -> PKI:
    """Find the CA and the KME/SAE certificates of a PKI made by :func:`make_certs`."""
    d = Path(dir)
    if not (d / "ca.pem").exists():
        raise ValueError(f"{d} holds no ca.pem; create it with make_certs")

    def scan(sub: str) -> dict[str, tuple[Path, Path]]:
        p = d / sub
        return {c.stem: (c, c.with_suffix(".key")) for c in sorted(p.glob("*.pem"))} if p.exists() else {}

    return PKI(d, d / "ca.pem", d / "ca.key", scan("kme"), scan("sae"))


def cert_common_name(cert: str | Path | bytes) -> str:
    """Subject common name of a PEM certificate (a path or PEM bytes)."""
    data = cert if isinstance(cert, bytes) else Path(cert).read_bytes()
    c = x509.load_pem_x509_certificate(data)
    return c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
