"""Shared fixtures for the unit tests: throwaway TLS material."""

from __future__ import annotations

import dataclasses
import datetime
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """PEM files of a self-signed ``localhost`` certificate and friends."""

    crt: pathlib.Path  # the certificate alone
    key: pathlib.Path  # its private key alone
    combined: pathlib.Path  # certificate followed by its key, one file
    other_key: pathlib.Path  # a valid key that does not match ``crt``
    garbage: pathlib.Path  # not PEM at all


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    root = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt_pem = cert.public_bytes(serialization.Encoding.PEM)
    files = TLSFiles(
        crt=root / "server.crt",
        key=root / "server.key",
        combined=root / "server.pem",
        other_key=root / "other.key",
        garbage=root / "garbage.pem",
    )
    files.crt.write_bytes(crt_pem)
    files.key.write_bytes(_key_pem(key))
    files.combined.write_bytes(crt_pem + _key_pem(key))
    files.other_key.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    files.garbage.write_bytes(b"this is not a PEM file\n")
    return files
