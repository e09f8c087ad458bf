"""Certificates for TLS tests, made fresh for 127.0.0.1: self-signed, or from a test CA."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.net import LOOPBACK

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """A test CA's certificate and a server certificate it signed (with its key), as PEM."""

    ca: Path
    cert: Path
    key: Path


def _key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str,
    key: EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: EllipticCurvePrivateKey,
    extensions: list[tuple[Any, bool]],
) -> x509.Certificate:
    """A certificate valid from five minutes ago for a day: ``(extension, critical)`` pairs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _loopback_name() -> Any:
    from cryptography import x509

    return x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))])


def _write(certificate: x509.Certificate, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _write_key(key: EllipticCurvePrivateKey, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def self_signed_certificate(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    key = _key()
    certificate = _certificate(common_name, key, common_name, key, [(_loopback_name(), False)])
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    _write(certificate, cert_path)
    _write_key(key, key_path)
    return cert_path, key_path


def certificate_authority(directory: Path) -> Pki:
    """A CA and a certificate for 127.0.0.1 signed by it, as PEM files in ``directory``: a
    client that trusts only the system's CAs rejects it, one given ``ca`` accepts it."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca_key, key = _key(), _key()
    ca_name = "spork test CA"
    ca = _certificate(
        ca_name,
        ca_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (usage, True),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    leaf = _certificate(
        LOOPBACK,
        key,
        ca_name,
        ca_key,
        [
            (_loopback_name(), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    pki = Pki(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    _write(ca, pki.ca)
    _write(leaf, pki.cert)
    _write_key(key, pki.key)
    return pki


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context serving ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
