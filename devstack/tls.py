"""A throw-away certificate authority and loopback server certificate, made at start.

The Key Vault SDK refuses bearer tokens over plain HTTP and MSAL wants an HTTPS authority, so the
stand-ins that speak those protocols serve HTTPS with a certificate clients trust through
``REQUESTS_CA_BUNDLE`` (or ``connection_verify``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class LoopbackCertificate:
    """Paths of a CA bundle (to trust) and of the server's certificate chain and key."""

    ca_path: Path
    cert_path: Path
    key_path: Path
    ca_key_path: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return context

    def context_for(self, hostname: str) -> ssl.SSLContext:
        """A server context for ``hostname``, signed by this CA (written beside it).

        For the one public name the stack answers for (Entra's instance discovery host, reached
        through :mod:`devstack.identity.discovery`) and for the broker's TLS address (an IP, named
        in the certificate as one): clients trust it by the same CA bundle.
        """
        if self.ca_key_path is None:
            raise RuntimeError("this certificate was made without its CA key; it cannot sign others")
        ca_key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise RuntimeError("the CA key is not the EC key make_loopback_certificate writes")
        ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(ca_cert.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName([_subject_name(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        chain = cert.public_bytes(pem) + ca_cert.public_bytes(pem)
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        directory = self.ca_path.parent
        chain_path, key_path = directory / f"{hostname}.pem", directory / f"{hostname}-key.pem"
        chain_path.write_bytes(chain)
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(chain_path), str(key_path))
        return context


def _subject_name(hostname: str) -> x509.GeneralName:
    """An IP address SAN for an address (TLS clients match an IP only against one), else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def certificate_beside(ca_path: Path) -> LoopbackCertificate:
    """The certificate :func:`make_loopback_certificate` wrote beside ``ca_path`` (a running stack's
    ``REQUESTS_CA_BUNDLE``), so another process can serve HTTPS that the stack's clients trust."""
    directory = ca_path.parent
    found = LoopbackCertificate(ca_path=ca_path, cert_path=directory / "server.pem",
                                key_path=directory / "server-key.pem")
    missing = [str(p) for p in (found.ca_path, found.cert_path, found.key_path) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"the local stack's TLS files are missing ({', '.join(missing)}); start the stack "
                                "with `python -m devstack up`")
    return found


def make_loopback_certificate(directory: Path) -> LoopbackCertificate:
    """Write a CA and a server certificate for 127.0.0.1, ::1 and localhost into ``directory``.

    EC P-256 keys keep generation in the low milliseconds, which matters for start-up time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devstack local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    key_path.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    ca_key_path = directory / "ca-key.pem"
    ca_key_path.write_bytes(
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca_key_path.chmod(0o600)
    return LoopbackCertificate(ca_path=ca_path, cert_path=cert_path, key_path=key_path, ca_key_path=ca_key_path)
