"""
Tests for L{wsqueue.certs}, the C{wsqueue-certs} development certificate maker.

The certificates must work with host name verification out of the box: the server
certificate is signed by the CA written next to it and names C{localhost},
C{127.0.0.1} and C{::1} in its subjectAltName (service_identity ignores the CN).
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import stat
from contextlib import redirect_stderr, redirect_stdout

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import certs
from wsqueue.certs import FILES, makeDevelopmentCertificates


def loadCert(directory: str, name: str) -> x509.Certificate:
    with open(os.path.join(directory, name), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def loadKey(directory: str, name: str):
    with open(os.path.join(directory, name), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def publicBytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class MakeDevelopmentCertificatesTests(SynchronousTestCase):
    """
    Tests for L{makeDevelopmentCertificates}.
    """

    def setUp(self) -> None:
        # A folder that does not exist yet: makeDevelopmentCertificates creates it.
        self.directory = os.path.join(self.mktemp(), "certs")
        makeDevelopmentCertificates(self.directory)

    def test_filesWritten(self) -> None:
        """
        The four files are written, creating the folder.
        """
        self.assertEqual(sorted(os.listdir(self.directory)), sorted(FILES))

    def test_keysPrivate(self) -> None:
        """
        Private keys are readable by their owner only.
        """
        for name in ["ca.key", "server.key"]:
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.directory, name)).st_mode), 0o600, name)

    def test_keysMatchCertificates(self) -> None:
        """
        Each key is the private half of its certificate.
        """
        for prefix in ["ca", "server"]:
            cert = loadCert(self.directory, f"{prefix}.crt")
            key = loadKey(self.directory, f"{prefix}.key")
            self.assertEqual(publicBytes(cert.public_key()), publicBytes(key.public_key()), prefix)

    def test_serverSignedByCA(self) -> None:
        """
        The server certificate is issued and signed by the CA.
        """
        ca = loadCert(self.directory, "ca.crt")
        server = loadCert(self.directory, "server.crt")
        self.assertEqual(server.issuer, ca.subject)
        server.verify_directly_issued_by(ca)

    def test_notSignedByOtherCA(self) -> None:
        """
        The signature check is meaningful: another CA did not sign the server certificate.
        """
        other = self.mktemp()
        makeDevelopmentCertificates(other)
        self.assertRaises(
            InvalidSignature, loadCert(self.directory, "server.crt").verify_directly_issued_by, loadCert(other, "ca.crt")
        )

    def test_caIsCA(self) -> None:
        """
        The CA certificate is self-signed and marked as a CA; the server one is not.
        """
        ca = loadCert(self.directory, "ca.crt")
        ca.verify_directly_issued_by(ca)
        self.assertTrue(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        server = loadCert(self.directory, "server.crt")
        self.assertFalse(server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    def test_subjectAltName(self) -> None:
        """
        The server certificate names localhost, 127.0.0.1 and ::1 in its subjectAltName.
        """
        san = loadCert(self.directory, "server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            san.value.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )

    def test_serverAuth(self) -> None:
        """
        The server certificate is for TLS servers.
        """
        usage = loadCert(self.directory, "server.crt").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        self.assertEqual(list(usage.value), [ExtendedKeyUsageOID.SERVER_AUTH])

    def test_validNow(self) -> None:
        """
        The certificates are valid now (with a day of slack for skewed clocks).
        """
        now = datetime.datetime.now(datetime.UTC)
        for name in ["ca.crt", "server.crt"]:
            cert = loadCert(self.directory, name)
            self.assertLess(cert.not_valid_before_utc, now - datetime.timedelta(hours=23))
            self.assertGreater(cert.not_valid_after_utc, now + datetime.timedelta(days=365))

    def test_hosts(self) -> None:
        """
        Given hosts become DNS names or IP addresses as they parse, the first one the CN.
        """
        directory = self.mktemp()
        makeDevelopmentCertificates(directory, ["queue.example", "10.0.0.1", "other.example"])
        server = loadCert(directory, "server.crt")
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["queue.example", "other.example"])
        self.assertEqual(san.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("10.0.0.1")])
        self.assertEqual(server.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value, "queue.example")


class MainTests(SynchronousTestCase):
    """
    Tests for L{certs.main}, the C{wsqueue-certs} command.
    """

    def runCerts(self, *argv: str) -> tuple[int, str, str]:
        """
        Run wsqueue-certs; return its exit code, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = certs.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_writes(self) -> None:
        """
        wsqueue-certs DIR writes the four files for the default hosts and says so.
        """
        directory = self.mktemp()
        code, out, err = self.runCerts(directory)
        self.assertEqual((code, err), (0, ""))
        self.assertIn(directory, out)
        self.assertEqual(sorted(os.listdir(directory)), sorted(FILES))
        san = loadCert(directory, "server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["localhost"])

    def test_hostOption(self) -> None:
        """
        --host (repeatable) replaces the default host names.
        """
        directory = self.mktemp()
        code, _, _ = self.runCerts(directory, "--host", "queue.example", "--host", "192.0.2.7")
        self.assertEqual(code, 0)
        san = loadCert(directory, "server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["queue.example"])
        self.assertEqual(san.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("192.0.2.7")])

    def test_refusesToOverwrite(self) -> None:
        """
        Without --force existing certificates are kept and it fails with 1, naming the files.
        """
        directory = self.mktemp()
        self.runCerts(directory)
        with open(os.path.join(directory, "server.crt"), "rb") as f:
            before = f.read()
        code, _, err = self.runCerts(directory)
        self.assertEqual(code, 1)
        self.assertIn("server.crt", err)
        self.assertIn("--force", err)
        with open(os.path.join(directory, "server.crt"), "rb") as f:
            self.assertEqual(f.read(), before)

    def test_refusesWithOneFile(self) -> None:
        """
        A single existing file is enough to refuse.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "ca.key"), "w") as f:
            f.write("mine")
        code, _, err = self.runCerts(directory)
        self.assertEqual(code, 1)
        self.assertIn("ca.key", err)
        self.assertEqual(os.listdir(directory), ["ca.key"])

    def test_force(self) -> None:
        """
        --force replaces existing certificates with new ones.
        """
        directory = self.mktemp()
        self.runCerts(directory)
        before = loadCert(directory, "server.crt")
        code, _, _ = self.runCerts(directory, "--force")
        self.assertEqual(code, 0)
        after = loadCert(directory, "server.crt")
        self.assertNotEqual(after.serial_number, before.serial_number)
        after.verify_directly_issued_by(loadCert(directory, "ca.crt"))
