"""A throwaway certificate authority for development and trials: `consent-ledger dev-ca`.

It writes what a TLS or mutual-TLS ledger needs (the Docker image listens beyond loopback only with TLS): a CA
certificate and key, a server certificate naming the given host names (and localhost / 127.0.0.1, which the
container's health check dials), and one client certificate per name given, whose common name is the identity it
speaks for (a party id, the operator's or an auditor's configured name). EC P-256 keys, SHA-256 signatures. Keys
are written 0600 to new files and never replace a file unless asked to. Not for production: a real deployment
gets its certificates from its own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# What the server certificate always names besides the given host names: the container's health check and a
# client on the same machine connect to these.
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """The files one run wrote (paths), for the CLI to print."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_names: tuple[str, ...]
    clients: tuple[tuple[str, Path, Path], ...]  # (common name, certificate, key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, secret: bool, overwrite: bool) -> None:
    """Write to a new file beside ``path`` (0600 for keys, 0644 for certificates) and rename it into place."""
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(17, "File exists (pass --force to replace the certificates)", str(path))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _check_cn(cn: str, what: str) -> str:
    if not cn or len(cn) > 64 or any(c in cn for c in "/\\\0\n") or cn.startswith("."):
        raise ValueError(f"{what}: {cn!r:.80} is not a usable name (1-64 characters, no slashes)")
    return cn


def issue(
    out: Path,
    server_names: list[str],
    clients: list[str],
    *,
    days: int = 365,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> Issued:
    """Create the CA and the certificates in ``out`` (created 0700 if missing). Raises ValueError for a bad name,
    FileExistsError when a file exists and ``overwrite`` is false (nothing is written then)."""
    if not server_names:
        raise ValueError("give at least one --server-name (the name clients connect to)")
    if days < 1:
        raise ValueError("--days must be at least 1")
    names = tuple(dict.fromkeys([*(_check_cn(n, "--server-name") for n in server_names), *LOCAL_NAMES]))
    client_names = tuple(dict.fromkeys(_check_cn(c, "--client") for c in clients))
    if "ca" in client_names or "server" in client_names:
        raise ValueError("--client: 'ca' and 'server' name this CA's own files")
    files = [out / "ca.crt", out / "ca.key", out / "server.crt", out / "server.key"]
    files += [out / f"{c}.{ext}" for c in client_names for ext in ("crt", "key")]
    if not overwrite:
        for path in files:
            if os.path.lexists(path):
                raise FileExistsError(17, "File exists (pass --force to replace the certificates)", str(path))
    out.mkdir(mode=0o700, parents=True, exist_ok=True)

    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("consent-ledger development CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    server_sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    server_sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_ADDRESSES]
    server_cert, server_key = leaf(names[0], ExtendedKeyUsageOID.SERVER_AUTH, server_sans)

    _write(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), secret=False, overwrite=True)
    _write(out / "ca.key", _key_pem(ca_key), secret=True, overwrite=True)
    _write(out / "server.crt", server_cert, secret=False, overwrite=True)
    _write(out / "server.key", server_key, secret=True, overwrite=True)
    issued_clients = []
    for cn in client_names:
        cert, key = leaf(cn, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        _write(out / f"{cn}.crt", cert, secret=False, overwrite=True)
        _write(out / f"{cn}.key", key, secret=True, overwrite=True)
        issued_clients.append((cn, out / f"{cn}.crt", out / f"{cn}.key"))
    return Issued(
        out / "ca.crt", out / "ca.key", out / "server.crt", out / "server.key", names, tuple(issued_clients)
    )
