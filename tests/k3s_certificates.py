"""Certificate files as a k3s server keeps them under /var/lib/rancher/k3s/server/tls: each leaf
file holds the leaf and the CA that signed it (k3s writes the chain), the CA files only the CA.
Made at runtime with `cryptography`; nothing key-like is a literal here."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS = "/var/lib/rancher/k3s/server/tls"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool, not_after: dt.datetime,
) -> x509.Certificate:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=3650 if ca else 365))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def server_tls(now: dt.datetime, leaf_days: dict[str, float]) -> dict[str, bytes]:
    """The files of a server whose leaf certificates (file name -> days left) expire as given;
    its CAs expire in ten years."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(
        "k3s-server-ca@1700000000", "k3s-server-ca@1700000000", ca_key, ca_key,
        ca=True, not_after=now + dt.timedelta(days=3650),
    )  # fmt: skip
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    files = {f"{TLS}/server-ca.crt": ca_pem, f"{TLS}/client-ca.crt": ca_pem}
    for name, days in leaf_days.items():
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(
            f"system:{name.removesuffix('.crt')}", "k3s-server-ca@1700000000", key, ca_key,
            ca=False, not_after=now + dt.timedelta(days=days),
        )  # fmt: skip
        files[f"{TLS}/{name}"] = leaf.public_bytes(serialization.Encoding.PEM) + ca_pem
    return files


def private_key_pem() -> bytes:
    """A key file, which the checks must never read."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
