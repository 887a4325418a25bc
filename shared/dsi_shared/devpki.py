"""A development PKI for `make run`'s MLLP listener (issue 12 §1): a CA, a server certificate for loopback and one
client certificate for a development HIE, so the dev stack speaks mutual TLS as production does. Never for
production: there the plan's PKI issues the certificates (`DSI_MLLP_TLS_*`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEV_HIE = "hie-dev"

Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


def issue(name: str, issuer: Issuer | None = None, *, ca: bool = False, loopback: bool = False,
          days: int = 365) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `name` signed by `issuer` (self-signed without one); `loopback`: valid for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if loopback:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def write(base: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """`base.crt` and `base.key` (PEM; the key readable by its owner only)."""
    cert_path, key_path = base.with_suffix(".crt"), base.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass(frozen=True)
class DevPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def dev_pki(directory: Path) -> DevPki:
    """The development PKI in `directory`, made once and kept (a developer's HIE tool keeps trusting it)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = DevPki(directory / "ca.crt", directory / "mllp-server.crt", directory / "mllp-server.key",
                   directory / f"{DEV_HIE}.crt", directory / f"{DEV_HIE}.key")
    if all(p.exists() for p in vars(paths).values()):
        return paths
    ca_cert, ca_key = issue("DSI development CA", ca=True, days=3650)
    write(directory / "ca", ca_cert, ca_key)
    (directory / "ca.key").unlink()  # nothing more is signed with it: a new one is made if a file goes missing
    write(directory / "mllp-server", *issue("mllp.localhost", (ca_cert.subject, ca_key), loopback=True))
    write(directory / DEV_HIE, *issue(DEV_HIE, (ca_cert.subject, ca_key)))
    return paths
