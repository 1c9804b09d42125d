"""TLS for a federation (`brushpen federate certs`): a private CA and a server certificate for the
host names and addresses the sites dial. The server gets `ca.pem`, `server.pem` and `server.key`
(`brushpen federate server --tls DIR`); each site gets only `ca.pem` (`--ca`). Keys are 0600."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from brushpen.errors import BadParameter
from brushpen.store import atomic_write_bytes


def make_certs(folder: Path, hosts: list[str], org: str = "brushpen federation", days: int = 365) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise BadParameter("give at least one --host the sites will dial (a name or an IP address)")
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{org} CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = (serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    folder = Path(folder)
    atomic_write_bytes(folder / "ca.key", ca_key.private_bytes(pem, *pkcs8), mode=0o600)
    atomic_write_bytes(folder / "server.key", key.private_bytes(pem, *pkcs8), mode=0o600)
    atomic_write_bytes(folder / "ca.pem", ca.public_bytes(pem))
    atomic_write_bytes(folder / "server.pem", cert.public_bytes(pem))
    return folder
