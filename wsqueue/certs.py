# -*- test-case-name: tests.test_certs -*-
"""
C{wsqueue-certs DIR}: development certificates, so that TLS works out of the box.

Writes a CA (C{ca.crt}, C{ca.key}) and a server certificate signed by it for
C{localhost}, C{127.0.0.1} and C{::1} (C{server.crt}, C{server.key}); keys are mode
0600.  The subjectAltName matters: host name verification ignores the common name.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FILES = ("ca.crt", "ca.key", "server.crt", "server.key")
_VALID_DAYS = 825


def _name(common: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wsqueue development"),
         x509.NameAttribute(NameOID.COMMON_NAME, common)]
    )


def _writeKey(path: str, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _writeCert(path: str, cert: x509.Certificate) -> None:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def makeDevelopmentCertificates(directory: str, hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> None:
    """
    Create a CA and a server certificate for C{hosts} in C{directory}.
    """
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=_VALID_DAYS)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = _name("wsqueue development CA")
    ca = (
        x509.CertificateBuilder().subject_name(caName).issuer_name(caName)
        .public_key(caKey.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()), critical=False)
        .sign(caKey, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    serverKey = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(caName)
        .public_key(serverKey.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()), critical=False)
        .sign(caKey, hashes.SHA256())
    )
    _writeKey(os.path.join(directory, "ca.key"), caKey)
    _writeCert(os.path.join(directory, "ca.crt"), ca)
    _writeKey(os.path.join(directory, "server.key"), serverKey)
    _writeCert(os.path.join(directory, "server.crt"), server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wsqueue-certs", description="Create a development CA and server certificate for wsqueue."
    )
    parser.add_argument("directory", help="where to write ca.crt, ca.key, server.crt, server.key")
    parser.add_argument("--host", action="append", dest="hosts",
                        help="a host name or IP address for the server certificate (repeatable; "
                             "default: localhost, 127.0.0.1, ::1)")
    parser.add_argument("--force", action="store_true", help="replace certificates that exist")
    args = parser.parse_args(argv)
    existing = [name for name in FILES if os.path.exists(os.path.join(args.directory, name))]
    if existing and not args.force:
        print(f"wsqueue-certs: {args.directory} already has {', '.join(existing)}; "
              "use --force to replace them", file=sys.stderr)
        return 1
    makeDevelopmentCertificates(args.directory, args.hosts or ("localhost", "127.0.0.1", "::1"))
    print(f"wrote {', '.join(FILES)} to {args.directory}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
