"""
Tests for L{wsqueue.tls}: checking server certificates before listening, the
listener, and client TLS options for stage-to-stage links.

A bad certificate folder must stop a daemon with a message naming the file at
fault, not with an OpenSSL traceback once it is already listening.
"""

from __future__ import annotations

import os
import shutil

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import tls
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.tls import TLSConfigurationError


class CheckServerCertificateTests(SynchronousTestCase):
    """
    Tests for L{tls.loadServerCertificate}, L{tls.serverOptions} and L{tls.serverEndpoint}.
    """

    def setUp(self) -> None:
        self.certDir = self.mktemp()
        makeDevelopmentCertificates(self.certDir)
        self.certPath = os.path.join(self.certDir, "server.crt")
        self.keyPath = os.path.join(self.certDir, "server.key")

    def assertConfigurationError(self, certDir: str, *fragments: str) -> None:
        """
        Assert that checking C{certDir} raises TLSConfigurationError whose message
        contains every fragment.
        """
        e = self.assertRaises(TLSConfigurationError, tls.loadServerCertificate, certDir)
        for fragment in fragments:
            self.assertIn(fragment, str(e))

    def overwrite(self, path: str, content: bytes) -> None:
        with open(path, "wb") as f:
            f.write(content)

    def test_valid(self) -> None:
        """
        A folder with a matching certificate and key gives them.
        """
        certs, key = tls.loadServerCertificate(self.certDir)
        with open(self.certPath, "rb") as f:
            self.assertEqual(certs[0].to_cryptography(), x509.load_pem_x509_certificate(f.read()))
        self.assertEqual(len(certs), 1)
        with open(self.keyPath, "rb") as f:
            self.assertEqual(key.to_cryptography_key().private_numbers(), serialization.load_pem_private_key(f.read(), None).private_numbers())

    def test_chain(self) -> None:
        """
        Certificates after the first in C{server.crt} are sent as its chain.
        """
        with open(os.path.join(self.certDir, "ca.crt"), "rb") as f:
            caPEM = f.read()
        with open(self.certPath, "ab") as f:
            f.write(caPEM)
        options = tls.serverOptions(self.certDir)
        self.assertEqual([cert.to_cryptography() for cert in options.extraCertChain], [x509.load_pem_x509_certificate(caPEM)])

    def test_missingFolder(self) -> None:
        """
        A missing folder is named, with how to create one.
        """
        missing = self.mktemp()
        self.assertConfigurationError(missing, f"certificate folder {missing} does not exist", "wsqueue-certs")

    def test_missingCertificate(self) -> None:
        """
        A missing server.crt is named.
        """
        os.remove(self.certPath)
        self.assertConfigurationError(self.certDir, f"certificate {self.certPath} does not exist")

    def test_missingKey(self) -> None:
        """
        A missing server.key is named.
        """
        os.remove(self.keyPath)
        self.assertConfigurationError(self.certDir, f"private key {self.keyPath} does not exist")

    def test_unreadableCertificate(self) -> None:
        """
        A server.crt that cannot be read (here: a folder) is named with the reason.
        """
        os.remove(self.certPath)
        os.mkdir(self.certPath)
        self.assertConfigurationError(self.certDir, f"cannot read certificate {self.certPath}")

    def test_garbageCertificate(self) -> None:
        """
        A server.crt that is not a PEM certificate is named.
        """
        self.overwrite(self.certPath, b"not a certificate\n")
        self.assertConfigurationError(self.certDir, f"certificate {self.certPath} is not a PEM certificate")

    def test_keyInsteadOfCertificate(self) -> None:
        """
        A key put where the certificate belongs is refused as not a certificate.
        """
        shutil.copy(self.keyPath, self.certPath)
        self.assertConfigurationError(self.certDir, f"certificate {self.certPath} is not a PEM certificate")

    def test_garbageKey(self) -> None:
        """
        A server.key that is not a PEM key is named.
        """
        self.overwrite(self.keyPath, b"not a key\n")
        self.assertConfigurationError(self.certDir, f"private key {self.keyPath} is not an unencrypted PEM key")

    def test_keyNotMatchingCertificate(self) -> None:
        """
        A key from another certificate is refused, naming both files.
        """
        other = self.mktemp()
        makeDevelopmentCertificates(other)
        shutil.copy(os.path.join(other, "server.key"), self.keyPath)
        self.assertConfigurationError(
            self.certDir, f"private key {self.keyPath} does not match certificate {self.certPath}"
        )

    def test_ed25519Certificate(self) -> None:
        """
        An Ed25519 certificate and its key are accepted (they have no key numbers to
        compare: the check compares encoded public keys), and another Ed25519 key is
        refused.
        """
        import datetime

        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.x509.oid import NameOID

        def write(key: ed25519.Ed25519PrivateKey, certKey: ed25519.Ed25519PrivateKey) -> None:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
            now = datetime.datetime.now(datetime.UTC)
            cert = (
                x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(certKey.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                .sign(certKey, None)
            )
            with open(self.certPath, "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            with open(self.keyPath, "wb") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))

        key = ed25519.Ed25519PrivateKey.generate()
        write(key, key)
        certs, _ = tls.loadServerCertificate(self.certDir)
        self.assertEqual(len(certs), 1)
        write(ed25519.Ed25519PrivateKey.generate(), key)
        self.assertConfigurationError(self.certDir, "does not match")

    def test_caKeyNotMatchingServerCertificate(self) -> None:
        """
        The CA's key (same folder, wrong file) does not pass for the server's.
        """
        shutil.copy(os.path.join(self.certDir, "ca.key"), self.keyPath)
        self.assertConfigurationError(self.certDir, "does not match")

    def test_serverEndpoint(self) -> None:
        """
        The listener has the port and interface (IPv6 too) and serves TLS that writes
        straight through (no write aggregation).  Every loopback test listens this way.
        """
        certDir = os.path.join(self.mktemp(), "with:colon")
        makeDevelopmentCertificates(certDir)
        reactor = MemoryReactorClock()
        tls.serverEndpoint(reactor, 8443, "::1", certDir).listen(Factory.forProtocol(Protocol))
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8443, "::1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIs(factory.protocol, TLSMemoryBIOProtocol)

    def test_serverEndpointChecks(self) -> None:
        """
        The listener is only made after the certificate was checked.
        """
        self.assertRaises(TLSConfigurationError, tls.serverEndpoint, MemoryReactorClock(), 8443, "127.0.0.1", self.mktemp())


class DefaultsTests(SynchronousTestCase):
    """
    Tests for L{tls.defaultCertDir} and L{tls.defaultCAPath}.
    """

    def test_certDirFromEnvironment(self) -> None:
        """
        $WS_CERT_DIR names the certificate folder, as in the Go system.
        """
        self.patch(os, "environ", {"WS_CERT_DIR": "/etc/wsqueue/certs"})
        self.assertEqual(tls.defaultCertDir(), "/etc/wsqueue/certs")

    def test_certDirDefault(self) -> None:
        """
        Without $WS_CERT_DIR (or with it empty) the folder is ./certs.
        """
        self.patch(os, "environ", {})
        self.assertEqual(tls.defaultCertDir(), "certs")
        self.patch(os, "environ", {"WS_CERT_DIR": ""})
        self.assertEqual(tls.defaultCertDir(), "certs")

    def test_caPathExists(self) -> None:
        """
        The certificate folder's ca.crt is the default CA when it exists.
        """
        certDir = self.mktemp()
        makeDevelopmentCertificates(certDir)
        self.assertEqual(tls.defaultCAPath(certDir), os.path.join(certDir, "ca.crt"))

    def test_caPathMissing(self) -> None:
        """
        Without a ca.crt there is no default CA (the system's trust store is used).
        """
        certDir = self.mktemp()
        os.mkdir(certDir)
        self.assertIsNone(tls.defaultCAPath(certDir))
        self.assertIsNone(tls.defaultCAPath(self.mktemp()))


class ParseURLTests(SynchronousTestCase):
    """
    Tests for L{tls.parseURL}.
    """

    def test_valid(self) -> None:
        """
        A wss:// URL gives its host, port and path.
        """
        self.assertEqual(tls.parseURL("wss://queue.example:8080/pushmsg"), ("queue.example", 8080, "/pushmsg"))

    def test_defaultPortAndPath(self) -> None:
        """
        Without a port the TLS port 443 is used; without a path, "/".
        """
        self.assertEqual(tls.parseURL("wss://queue.example"), ("queue.example", 443, "/"))

    def test_ipv6(self) -> None:
        """
        An IPv6 literal in brackets gives the bare address.
        """
        self.assertEqual(tls.parseURL("wss://[::1]:8080/x"), ("::1", 8080, "/x"))

    def test_notWSS(self) -> None:
        """
        Other schemes are refused: ws:// in particular (links are always TLS).
        """
        for url in ["ws://localhost:8080", "https://localhost", "localhost:8080", ""]:
            e = self.assertRaises(ValueError, tls.parseURL, url)
            self.assertIn("is not a wss:// URL", str(e))

    def test_noHost(self) -> None:
        """
        A URL without a host is refused.
        """
        for url in ["wss://", "wss://:8080/x"]:
            e = self.assertRaises(ValueError, tls.parseURL, url)
            self.assertIn("has no host", str(e))

    def test_badPort(self) -> None:
        """
        A port that is not a number, or out of range, is refused.
        """
        for url in ["wss://localhost:abc", "wss://localhost:70000"]:
            e = self.assertRaises(ValueError, tls.parseURL, url)
            self.assertIn("has an invalid port", str(e))


class ClientTests(SynchronousTestCase):
    """
    Tests for L{tls.clientCreator} and L{tls.clientEndpoint}.
    """

    def setUp(self) -> None:
        self.certDir = self.mktemp()
        makeDevelopmentCertificates(self.certDir)
        self.caPath = os.path.join(self.certDir, "ca.crt")

    def test_insecure(self) -> None:
        """
        --insecure gives CertificateOptions that verify nothing.
        """
        options = tls.clientCreator("localhost", self.caPath, insecure=True)
        self.assertIsInstance(options, ssl.CertificateOptions)
        self.assertFalse(options.verify)

    def test_missingCA(self) -> None:
        """
        A CA file that does not exist is named.
        """
        missing = self.mktemp()
        e = self.assertRaises(TLSConfigurationError, tls.clientCreator, "localhost", missing)
        self.assertIn(f"CA certificate {missing} does not exist", str(e))

    def test_garbageCA(self) -> None:
        """
        A CA file that is not a PEM certificate is named.
        """
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"not a certificate\n")
        e = self.assertRaises(TLSConfigurationError, tls.clientCreator, "localhost", garbage)
        self.assertIn(f"CA certificate {garbage} is not a PEM certificate", str(e))

    def test_validCA(self) -> None:
        """
        A valid CA gives a connection creator that verifies the host name.
        """
        creator = tls.clientCreator("localhost", self.caPath)
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))
        self.assertNotIsInstance(creator, ssl.CertificateOptions)

    def test_systemTrust(self) -> None:
        """
        Without a CA file the platform's trust store is used (no error).
        """
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(tls.clientCreator("localhost", None)))

    def test_clientEndpoint(self) -> None:
        """
        clientEndpoint connects to the URL's port with the connect timeout, only when asked to.
        """
        reactor = MemoryReactorClock()
        endpoint = tls.clientEndpoint(reactor, "wss://127.0.0.1:8443/popmsg", self.caPath)
        self.assertTrue(IStreamClientEndpoint.providedBy(endpoint))
        self.assertEqual(reactor.tcpClients, [])
        d = endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual([(host, port, timeout) for host, port, _, timeout, _ in reactor.tcpClients],
                         [("127.0.0.1", 8443, tls.CONNECT_TIMEOUT)])
        tlsFactory = reactor.tcpClients[0][2]._wrappedFactory
        self.assertIs(tlsFactory.protocol, TLSMemoryBIOProtocol)
        d.cancel()
        self.failureResultOf(d, ConnectingCancelledError)

    def test_clientEndpointBadURL(self) -> None:
        """
        clientEndpoint refuses a URL that is not wss://.
        """
        self.assertRaises(ValueError, tls.clientEndpoint, MemoryReactorClock(), "ws://localhost:8443", self.caPath)


class _Recording(Protocol):
    """
    Remembers whether the connection was lost, and why.
    """

    lost = None

    def connectionLost(self, reason) -> None:
        self.lost = reason


def handshake(serverOptions, clientCreator) -> tuple[TLSMemoryBIOProtocol, _Recording, TLSMemoryBIOProtocol, _Recording]:
    """
    A TLS handshake in memory between a server with C{serverOptions} and a client
    with C{clientCreator}, once it has succeeded or failed: the server's TLS
    protocol and the protocol it wraps, then the client's.
    """
    address = IPv4Address("TCP", "127.0.0.1", 8443)
    wrapped: dict[bool, _Recording] = {}

    def side(options, isClient: bool):
        factory = Factory.forProtocol(_Recording)
        factory.buildProtocol = lambda addr: wrapped.setdefault(isClient, _Recording())
        return lambda: TLSMemoryBIOFactory(options, isClient, factory).buildProtocol(address)

    client, server, pump = iosim.connectedServerAndClient(side(serverOptions, False), side(clientCreator, True))
    pump.flush()
    return server, wrapped[False], client, wrapped[True]


class ALPNTests(SynchronousTestCase):
    """
    Tests for the ALPN offers of L{tls.serverOptions} and L{tls.clientCreator}.

    Twisted's L{ssl.CertificateOptions} always installs an ALPN callback that, with
    no acceptable protocols configured, selects none: OpenSSL then aborts the
    handshake of every client that offers ALPN (curl, browsers) with an "internal
    error" alert.  (tests.test_curl tries this with real clients.)
    """

    def setUp(self) -> None:
        self.certDir = self.mktemp()
        makeDevelopmentCertificates(self.certDir)
        with open(os.path.join(self.certDir, "ca.crt"), "rb") as f:
            self.trustRoot = ssl.Certificate.loadPEM(f.read())

    def offering(self, protocols: list[bytes] | None):
        """
        Client options verifying the development certificate, offering C{protocols}.
        """
        return ssl.optionsForClientTLS("localhost", trustRoot=self.trustRoot, acceptableProtocols=protocols)

    def test_serverSelectsHTTP11(self) -> None:
        """
        A client offering http/1.1 (alone or after h2, as curl and browsers do)
        gets it; one offering nothing gets a connection without ALPN.
        """
        for offer, selected in [([b"http/1.1"], b"http/1.1"), ([b"h2", b"http/1.1"], b"http/1.1"), (None, None)]:
            server, serverSide, client, clientSide = handshake(tls.serverOptions(self.certDir), self.offering(offer))
            self.assertIsNone(serverSide.lost, offer)
            self.assertIsNone(clientSide.lost, offer)
            self.assertTrue(clientSide.transport.getPeerCertificate(), offer)  # the handshake is done
            self.assertEqual((server.negotiatedProtocol, client.negotiatedProtocol), (selected, selected), offer)

    def test_twistedDefaultRefusesALPN(self) -> None:
        """
        What went wrong before: with Twisted's defaults (no acceptable protocols),
        a client that offers ALPN fails the handshake.
        """
        certs, key = tls.loadServerCertificate(self.certDir)
        twistedDefaults = ssl.CertificateOptions(privateKey=key, certificate=certs[0])
        _, _, _, clientSide = handshake(twistedDefaults, self.offering([b"http/1.1"]))
        self.assertIsNotNone(clientSide.lost)
        self.assertIn("internal error", clientSide.lost.getErrorMessage())

    def test_linksOfferNoALPN(self) -> None:
        """
        Links offer no ALPN, so they still reach a msgqueue (or any server) built on
        Twisted's defaults, as every wsqueue before this change was; and they reach
        today's servers too.
        """
        certs, key = tls.loadServerCertificate(self.certDir)
        caPath = os.path.join(self.certDir, "ca.crt")
        for serverOptions in (ssl.CertificateOptions(privateKey=key, certificate=certs[0]), tls.serverOptions(self.certDir)):
            _, serverSide, client, clientSide = handshake(serverOptions, tls.clientCreator("localhost", caPath))
            self.assertIsNone(clientSide.lost)
            self.assertIsNone(serverSide.lost)
            self.assertTrue(clientSide.transport.getPeerCertificate())
            self.assertIsNone(client.negotiatedProtocol)
