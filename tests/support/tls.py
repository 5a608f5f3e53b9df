"""A gateway serving TLS on 127.0.0.1, with a self-signed certificate made for the test.

The certificate (CN and SAN ``localhost`` + IP ``127.0.0.1``) is generated with
``cryptography`` into the mesh copy, and ``[gateway] tls_cert_file / tls_key_file`` point
at it (relative to the mesh). Clients trust it through ``tls_root_certs``.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.servers import Private, configure, copy_mesh, start_private


def self_signed_certificate() -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for localhost and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@contextmanager
def tls_private(demo_mesh: Path, tmp: Path) -> Iterator[Private]:
    """A private gateway on a copy of ``demo_mesh`` serving TLS (``root_certs``: its
    certificate); killed on exit."""
    mesh = copy_mesh(demo_mesh, tmp / "mesh")
    cert, key = self_signed_certificate()
    (mesh / "tls").mkdir()
    (mesh / "tls" / "cert.pem").write_bytes(cert)
    (mesh / "tls" / "key.pem").write_bytes(key)
    configure(mesh, "gateway", tls_cert_file="tls/cert.pem", tls_key_file="tls/key.pem")
    running = start_private(mesh, tmp / "gateway.log", tls_root_certs=cert)
    try:
        yield running
    finally:
        running.kill()
