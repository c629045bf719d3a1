# -*- test-case-name: tests.test_tls -*-
"""
TLS for wsqueue: the only module that knows about certificates and OpenSSL.

Servers listen with C{server.crt}/C{server.key} from a certificate folder; stage-to-
stage clients verify msgqueue's certificate and host name against a CA file (or the
system's trust store), unless told C{--insecure} as the Go system was.
"""

from __future__ import annotations

import os
from typing import cast
from urllib.parse import urlsplit

from cryptography import x509
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from wsqueue._compat import UNBUFFERED_TLS_PROTOCOL

SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CA_CERT = "ca.crt"
CONNECT_TIMEOUT = 10


class TLSConfigurationError(Exception):
    """
    A certificate or key is missing or unusable; the message names the file.
    """


def defaultCertDir() -> str:
    """
    C{$WS_CERT_DIR} (as the Go system used), else C{./certs}.
    """
    return os.environ.get("WS_CERT_DIR") or "certs"


def _readPEM(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSConfigurationError(f"{what} {path} does not exist (create one with: wsqueue-certs DIR)")
    except OSError as e:
        raise TLSConfigurationError(f"cannot read {what} {path}: {e.strerror}")


def _publicKeyBytes(key: crypto.PKey) -> bytes:
    """
    The DER SubjectPublicKeyInfo of C{key} (or of a private key's public half).
    """
    return crypto.dump_publickey(crypto.FILETYPE_ASN1, key)


def loadServerCertificate(certDir: str) -> tuple[list[crypto.X509], crypto.PKey]:
    """
    Read C{server.crt} (the certificate, then any chain certificates) and the key
    that must match it from C{certDir}, or say which file is wrong.
    """
    if not os.path.isdir(certDir):
        raise TLSConfigurationError(f"certificate folder {certDir} does not exist (create one with: wsqueue-certs {certDir})")
    return loadCertificateFiles(os.path.join(certDir, SERVER_CERT), os.path.join(certDir, SERVER_KEY))


def loadCertificateFiles(
    certPath: str, keyPath: str, chainPath: str | None = None
) -> tuple[list[crypto.X509], crypto.PKey]:
    """
    Read a certificate (then any chain certificates) from C{certPath}, the key that
    must match it from C{keyPath} (which may be the same file, holding both), and
    more chain certificates from C{chainPath}; or say which file is wrong.

    What C{--cert-dir} and the C{certKey=}, C{privateKey=} and C{extraCertChain=}
    arguments of a C{--listen} description both come to.
    """
    certPEM = _readPEM(certPath, "certificate")
    keyPEM = _readPEM(keyPath, "private key")
    certs = _loadCertificates(certPEM, certPath, "certificate")
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, keyPEM)
    except crypto.Error:
        raise TLSConfigurationError(f"private key {keyPath} is not an unencrypted PEM key")
    # Compared as encoded public keys: every key type has that form (an Ed25519 or
    # Ed448 key has no public_numbers()).
    if _publicKeyBytes(certs[0].get_pubkey()) != _publicKeyBytes(key):
        raise TLSConfigurationError(f"private key {keyPath} does not match certificate {certPath}")
    if chainPath is not None:
        certs += _loadCertificates(_readPEM(chainPath, "certificate chain"), chainPath, "certificate chain")
    return certs, key


def _loadCertificates(pem: bytes, path: str, what: str) -> list[crypto.X509]:
    try:
        return [crypto.X509.from_cryptography(cert) for cert in x509.load_pem_x509_certificates(pem)]
    except ValueError:
        raise TLSConfigurationError(f"{what} {path} is not a PEM certificate")


class _DirectTLSFactory(TLSMemoryBIOFactory):
    """
    TLS whose writes go straight to OpenSSL and the socket.

    Twisted's default TLS transport gathers small writes and sends them a reactor turn
    later, with a timer per connection.  wsqueue already gathers what a turn has for a
    connection into one write, so that would only add a turn of latency and a timer
    per write (for 10,000 clients, 10,000 timers per message).  Which class does
    that is Twisted's undocumented choice: see L{wsqueue._compat.UNBUFFERED_TLS_PROTOCOL}.
    """

    protocol = UNBUFFERED_TLS_PROTOCOL


@implementer(IStreamServerEndpoint)
class _TLSServerEndpoint:
    def __init__(self, tcp: IStreamServerEndpoint, options: ssl.CertificateOptions) -> None:
        self._tcp = tcp
        self._options = options

    def listen(self, factory: IProtocolFactory) -> Deferred:
        return self._tcp.listen(_DirectTLSFactory(self._options, False, factory))


@implementer(IStreamClientEndpoint)
class _TLSClientEndpoint:
    def __init__(self, tcp: IStreamClientEndpoint, creator) -> None:
        self._tcp = tcp
        self._creator = creator

    def connect(self, factory: IProtocolFactory) -> Deferred:
        d = self._tcp.connect(_DirectTLSFactory(self._creator, True, factory))
        # The endpoint's IProtocol is the TLS wrapper that _DirectTLSFactory built.
        return d.addCallback(lambda tls: cast(TLSMemoryBIOProtocol, tls).wrappedProtocol)


ALPN_PROTOCOLS = [b"http/1.1"]
"""What a server offers over TLS ALPN: the WebSocket opening handshake is HTTP/1.1.

Twisted's L{ssl.CertificateOptions} always installs an ALPN callback; with no
acceptable protocols it selects nothing, and OpenSSL then aborts the handshake of every
client that offers ALPN (curl, browsers, C{openssl s_client -alpn}) with an "internal
error" alert.  Clients that offer no ALPN are not affected either way."""


def serverOptions(certDir: str) -> ssl.CertificateOptions:
    """
    The TLS options of a server listening with C{certDir}'s certificate, selecting
    C{http/1.1} for clients that offer ALPN (see L{ALPN_PROTOCOLS}).
    """
    return _serverOptionsOf(*loadServerCertificate(certDir))


def serverOptionsFromFiles(certPath: str, keyPath: str, chainPath: str | None = None) -> ssl.CertificateOptions:
    """
    The same TLS options as L{serverOptions} (ALPN included), with the certificate
    and key of the given files (see L{loadCertificateFiles}).
    """
    return _serverOptionsOf(*loadCertificateFiles(certPath, keyPath, chainPath))


def _serverOptionsOf(certs: list[crypto.X509], key: crypto.PKey) -> ssl.CertificateOptions:
    return ssl.CertificateOptions(
        privateKey=key, certificate=certs[0], extraCertChain=certs[1:] or None, acceptableProtocols=ALPN_PROTOCOLS
    )


def serverEndpoint(reactor, port: int, interface: str, certDir: str) -> IStreamServerEndpoint:
    """
    The TLS listener of a daemon, after checking the certificate.
    """
    return tlsServerEndpoint(TCP4ServerEndpoint(reactor, port, interface=interface), serverOptions(certDir))


def tlsServerEndpoint(endpoint: IStreamServerEndpoint, options: ssl.CertificateOptions) -> IStreamServerEndpoint:
    """
    C{endpoint} (any kind: TCP, a UNIX socket, one inherited from systemd) serving
    TLS with C{options}: how C{--listen tls:...} and C{ssl:...} listen with
    wsqueue's own TLS settings rather than Twisted's C{ssl:} ones, which offer no
    ALPN (see L{ALPN_PROTOCOLS}).
    """
    return _TLSServerEndpoint(endpoint, options)


def defaultCAPath(certDir: str) -> str | None:
    """
    C{<certDir>/ca.crt} when it exists: the CA the development certificates use.
    """
    path = os.path.join(certDir, CA_CERT)
    return path if os.path.exists(path) else None


def clientCreator(hostname: str, caPath: str | None, insecure: bool = False):
    """
    TLS options for a client connection to C{hostname}.

    Verifies the peer's certificate and host name against C{caPath}, or the platform's
    trust store when it is L{None}; C{insecure} skips verification entirely.

    Links offer no ALPN, on purpose: a msgqueue from before L{ALPN_PROTOCOLS} (or any
    server built on Twisted's defaults) aborts the handshake of a client that offers
    it, so offering it would break links during a rolling upgrade, and it gains
    nothing: without ALPN every server speaks HTTP/1.1, which the handshake needs.
    """
    if insecure:
        return ssl.CertificateOptions(verify=False)
    trustRoot = None
    if caPath is not None:
        pem = _readPEM(caPath, "CA certificate")
        try:
            trustRoot = ssl.Certificate.loadPEM(pem)
        except (crypto.Error, ValueError):
            raise TLSConfigurationError(f"CA certificate {caPath} is not a PEM certificate")
    return ssl.optionsForClientTLS(hostname, trustRoot=trustRoot)


def parseURL(url: str) -> tuple[str, int, str]:
    """
    Split a C{wss://host:port/path} URL into host, port and path, checking the scheme.
    """
    parts = urlsplit(url)
    if parts.scheme != "wss":
        raise ValueError(f"{url!r} is not a wss:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port")
    return parts.hostname, port, parts.path or "/"


def clientEndpoint(
    reactor, url: str, caPath: str | None, insecure: bool = False, address: str | None = None
) -> IStreamClientEndpoint:
    """
    A TLS client endpoint for a C{wss://} URL: it verifies the server under the
    URL's host name, and connects to that host, or to C{address} when given (the
    all-in-one daemon reaches its own msgqueue on loopback under the name its
    certificate carries).
    """
    host, port, _ = parseURL(url)
    return _TLSClientEndpoint(
        HostnameEndpoint(reactor, address or host, port, timeout=CONNECT_TIMEOUT), clientCreator(host, caPath, insecure)
    )


def certificateNames(certDir: str) -> list[str]:
    """
    The host names and addresses the server certificate in C{certDir} is valid for
    (its subjectAltName, which is all that host name verification reads).
    """
    certs, _ = loadServerCertificate(certDir)
    try:
        names = certs[0].to_cryptography().extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in names if isinstance(name, (x509.DNSName, x509.IPAddress))]
