"""
Tests for C{--listen} (L{wsqueue.tap._listen}): Twisted endpoint descriptions as
listeners, with wsqueue's own TLS (ALPN included) for C{ssl:} and C{tls:}, plain
C{ws://} for the rest; what is logged and reported; real clients over TCP, UNIX
sockets and sockets inherited as from systemd, and real daemons.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor, ssl
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue import tls
from wsqueue._compat import unsentBytes
from wsqueue.auth import basicHeader
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.options import StartupError
from wsqueue.tap import _common, _listen, allinone, msgqueue, publisher, subscriber

from .daemons import Daemon, freePort
from .helpers import DaemonOptionsMixin, caPath, certDir, withTimeout
from .test_tls import handshake


def shortTemporaryFolder(testCase) -> str:
    """
    A folder for UNIX sockets, removed when the test ends: a socket's path must fit
    in about 100 bytes, which trial's own temporary paths may not.
    """
    folder = tempfile.mkdtemp(prefix="wsq-")
    testCase.addCleanup(shutil.rmtree, folder, True)
    return folder


def presentedCertificate(tlsFactory: TLSMemoryBIOFactory) -> bytes:
    """
    The SHA-256 digest of the certificate a TLS server factory presents.
    """
    tlsFactory.wrappedFactory = Factory.forProtocol(Protocol)  # TLS alone, no WebSocket timers
    connection = tlsFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
    connection.makeConnection(StringTransport())
    return connection.getHandle().get_certificate().digest("sha256")


def certificateDigest(path: str) -> bytes:
    from OpenSSL import crypto

    with open(path, "rb") as f:
        return crypto.load_certificate(crypto.FILETYPE_PEM, f.read()).digest("sha256")


class ParseListenerTests(SynchronousTestCase):
    """
    Tests for L{_listen.parseListener} over a L{MemoryReactorClock}: which endpoint
    each description gives, with or without wsqueue's TLS, and one-line errors.
    """

    def setUp(self) -> None:
        self.certDir = self.mktemp()
        makeDevelopmentCertificates(self.certDir)
        self.reactor = MemoryReactorClock()
        self.factory = Factory.forProtocol(Protocol)

    def listen(self, description: str) -> _listen.Listener:
        listener = _listen.parseListener(self.reactor, description, self.certDir)
        listener.endpoint.listen(self.factory)
        return listener

    def assertRefused(self, description: str, *fragments: str) -> str:
        """
        Assert that C{description} is refused with one line naming it and holding
        every fragment; nothing may listen.
        """
        e = self.assertRaises(StartupError, _listen.parseListener, self.reactor, description, self.certDir)
        message = str(e)
        self.assertTrue(message.startswith(f"--listen {description}: "), message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertEqual((self.reactor.tcpServers, self.reactor.unixServers), ([], []))
        return message

    def test_ssl(self) -> None:
        """
        C{ssl:} listens on TCP with wsqueue's TLS (not Twisted's C{ssl:} options,
        which would want C{server.pem}), presenting C{--cert-dir}'s certificate.
        """
        listener = self.listen("ssl:8443:interface=127.0.0.1:backlog=7")
        self.assertTrue(listener.secure)
        [(port, tlsFactory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, backlog, interface), (8443, 7, "127.0.0.1"))
        self.assertIsInstance(tlsFactory, TLSMemoryBIOFactory)
        self.assertIs(tlsFactory.wrappedFactory, self.factory)
        self.assertEqual(presentedCertificate(tlsFactory), certificateDigest(os.path.join(self.certDir, "server.crt")))

    def test_sslCertificateFiles(self) -> None:
        """
        C{certKey=} and C{privateKey=} name the certificate and key instead of
        C{--cert-dir}'s; C{privateKey=} alone names a file holding both.
        """
        other = self.mktemp()
        makeDevelopmentCertificates(other, hosts=("mq.example.org",))
        cert, key = os.path.join(other, "server.crt"), os.path.join(other, "server.key")
        combined = os.path.join(other, "both.pem")
        with open(combined, "wb") as out, open(key, "rb") as k, open(cert, "rb") as c:
            out.write(k.read() + c.read())
        for description in [f"ssl:8443:certKey={cert}:privateKey={key}", f"ssl:8443:privateKey={combined}",
                            f"tls:tcp:8443:certKey={cert}:privateKey={key}"]:
            self.reactor = MemoryReactorClock()
            self.listen(description)
            [(_, tlsFactory, _, _)] = self.reactor.tcpServers
            self.assertEqual(presentedCertificate(tlsFactory), certificateDigest(cert), description)

    def test_sslWithColonInPath(self) -> None:
        """
        A file name with an escaped colon reaches wsqueue whole.
        """
        folder = os.path.join(self.mktemp(), "with:colon")
        makeDevelopmentCertificates(folder)
        escaped = folder.replace(":", "\\:")
        self.listen(f"ssl:8443:certKey={escaped}/server.crt:privateKey={escaped}/server.key")
        [(_, tlsFactory, _, _)] = self.reactor.tcpServers
        self.assertEqual(presentedCertificate(tlsFactory), certificateDigest(os.path.join(folder, "server.crt")))

    def test_sslRefusedArguments(self) -> None:
        """
        Twisted's C{ssl:} arguments that would change wsqueue's TLS settings, extra
        positional arguments, and a chain without a certificate are refused.
        """
        self.assertRefused("ssl:8443:sslmethod=TLSv1_2_METHOD", "sslmethod= is not supported")
        self.assertRefused("ssl:8443:dhParameters=dh.pem", "dhParameters= is not supported")
        self.assertRefused("ssl:8443:server.pem", "ssl: takes a port")
        self.assertRefused("ssl", "ssl: takes a port")
        self.assertRefused("ssl:interface=127.0.0.1", "ssl: takes a port")
        self.assertRefused("ssl:8443:extraCertChain=chain.pem", "extraCertChain= needs certKey=")

    def test_sslMissingCertificate(self) -> None:
        """
        A certificate file that does not exist is named.
        """
        missing = self.mktemp()
        self.assertRefused(f"ssl:8443:certKey={missing}", f"certificate {missing} does not exist")
        self.certDir = self.mktemp()
        self.assertRefused("ssl:8443", f"certificate folder {self.certDir} does not exist")

    def test_tcpIsPlain(self) -> None:
        """
        C{tcp:} serves the factory without TLS, wrapped so that the slow-consumer
        bound sees the socket's transport as it does under TLS.
        """
        listener = self.listen("tcp:9000:interface=\\:\\:1")
        self.assertFalse(listener.secure)
        [(port, wrapping, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (9000, "::1"))
        self.assertIsInstance(wrapping, WrappingFactory)
        self.assertNotIsInstance(wrapping, TLSMemoryBIOFactory)
        self.assertIs(wrapping.wrappedFactory, self.factory)

    def test_unix(self) -> None:
        """
        C{unix:} is plain; C{tls:unix:} is the same socket with wsqueue's TLS.
        """
        self.assertFalse(self.listen("unix:/run/wsq.sock:mode=660").secure)
        self.assertTrue(self.listen("tls:unix:/run/wsq-tls.sock").secure)
        [(path, plain, _, mode, _), (tlsPath, tlsFactory, _, _, _)] = self.reactor.unixServers
        self.assertEqual((path, mode, tlsPath), ("/run/wsq.sock", 0o660, "/run/wsq-tls.sock"))
        self.assertIsInstance(plain, WrappingFactory)
        self.assertIsInstance(tlsFactory, TLSMemoryBIOFactory)

    def test_systemdWithoutInheritedSocket(self) -> None:
        """
        C{systemd:} in a process that inherited no socket says so, in one line.
        (A daemon given real inherited sockets: L{SystemdDaemonTests}.)
        """
        self.assertRefused("systemd:domain=INET:index=0", "no such socket was inherited from systemd")
        self.assertRefused("tls:systemd:domain=INET:name=wsqueue", "no such socket was inherited from systemd")

    def test_badDescriptions(self) -> None:
        """
        An unknown endpoint type or bad arguments are one line naming the description.
        """
        self.assertRefused("nosuchtype:1", "Unknown endpoint type")
        self.assertRefused("tcp:port", "invalid literal")
        self.assertRefused("tcp", "wrong arguments for tcp")
        self.assertRefused("tcp:1:nosuch=2", "wrong arguments for tcp")
        self.assertRefused("tls:nosuchtype:1", "Unknown endpoint type")
        self.assertRefused("tcp:1\\", "lone backslash")


class ListenersOfTests(DaemonOptionsMixin, SynchronousTestCase):
    """
    Tests for L{_listen.listenersOf}, L{_listen.describeAddress}, and the
    daemons' services listening where C{--listen} says.
    """

    def start(self, module, *argv: str):
        service = module.makeService(self.options(module, *argv), reactor=self.reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_listenReplacesPort(self) -> None:
        """
        With C{--listen}, each daemon listens on every description, and not on its
        default port.
        """
        for module in (msgqueue, publisher, subscriber):
            self.reactor = MemoryReactorClock()
            self.start(module, "--listen", "ssl:9443:interface=127.0.0.1", "--listen", "tcp:9080:interface=127.0.0.1",
                       "--listen", "unix:/run/wsq.sock")
            [(sslPort, sslFactory, _, _), (tcpPort, tcpFactory, _, _)] = self.reactor.tcpServers
            self.assertEqual((sslPort, tcpPort), (9443, 9080), module)
            self.assertIsInstance(sslFactory, TLSMemoryBIOFactory)
            self.assertNotIsInstance(tcpFactory, TLSMemoryBIOFactory)
            self.assertEqual([path for path, *_ in self.reactor.unixServers], ["/run/wsq.sock"])

    def test_plainWarning(self) -> None:
        """
        Each listener without TLS is named in a warning at start; TLS listeners are not.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start(publisher, "--listen", "tcp:9080", "--listen", "unix:/run/wsq.sock", "--listen", "ssl:9443",
                   "--listen", "tls:unix:/run/wsq-tls.sock")
        warnings = [e for e in events if e["log_level"] == LogLevel.warn and "WITHOUT TLS" in e["log_format"]]
        self.assertEqual([(e["stage"], e["description"]) for e in warnings],
                         [("publisher", "tcp:9080"), ("publisher", "unix:/run/wsq.sock")])

    def test_noListenNoWarning(self) -> None:
        """
        Without C{--listen}, nothing changes: TLS on the port and interface, no warning.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start(subscriber)
        [(port, tlsFactory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (8082, "127.0.0.1"))
        self.assertIsInstance(tlsFactory, TLSMemoryBIOFactory)
        self.assertEqual([e for e in events if "WITHOUT TLS" in e["log_format"]], [])

    def test_badDescriptionStopsTheDaemon(self) -> None:
        """
        A description Twisted cannot read stops each daemon in makeService with one
        line, before anything listens.
        """
        for tapname, module in [("wsqueue-msgqueue", msgqueue), ("wsqueue-publisher", publisher),
                                ("wsqueue-subscriber", subscriber)]:
            options = self.options(module, "--listen", "ssl:9443", "--listen", "nosuchtype:1")
            e = self.assertRaises(SystemExit, module.makeService, options, reactor=self.reactor)
            self.assertEqual(e.code, f"{tapname}: --listen nosuchtype:1: Unknown endpoint type: 'nosuchtype'")
            self.assertEqual(self.reactor.tcpServers, [])

    def test_readinessAndLogLines(self) -> None:
        """
        The listening log lines say C{wss://}, C{ws://}, C{unix:PATH} or
        C{tls:unix:PATH}; the readiness events keep C{host} and C{port} for TCP and
        give a UNIX socket's C{path}, marking listeners without TLS C{"tls": false}.
        """
        ready = os.path.abspath(self.mktemp())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start(msgqueue, "--ready-file", ready, "--listen", "ssl:9443:interface=127.0.0.1",
                   "--listen", "tcp:9080", "--listen", "unix:/run/wsq.sock", "--listen", "tls:unix:/run/wsq-tls.sock")
        lines = [e["where"] for e in events if e["log_format"].startswith("{stage} listening on")]
        # MemoryReactor's ports all say 0.0.0.0.
        self.assertEqual(lines, ["wss://0.0.0.0:9443", "ws://0.0.0.0:9080", "unix:/run/wsq.sock",
                                 "tls:unix:/run/wsq-tls.sock"])
        with open(ready) as f:
            written = [json.loads(line) for line in f]
        self.assertEqual(written, [
            {"event": "listening", "stage": "msgqueue", "host": "0.0.0.0", "port": 9443},
            {"event": "listening", "stage": "msgqueue", "host": "0.0.0.0", "port": 9080, "tls": False},
            {"event": "listening", "stage": "msgqueue", "path": "/run/wsq.sock", "tls": False},
            {"event": "listening", "stage": "msgqueue", "path": "/run/wsq-tls.sock"},
            {"event": "ready"},
        ])

    def test_describeAddress(self) -> None:
        """
        Addresses as the log line and the readiness event give them.
        """
        self.assertEqual(_listen.describeAddress(IPv4Address("TCP", "127.0.0.1", 8081), True),
                         ("wss://127.0.0.1:8081", {"host": "127.0.0.1", "port": 8081}))
        self.assertEqual(_listen.describeAddress(IPv4Address("TCP", "127.0.0.1", 8081), False),
                         ("ws://127.0.0.1:8081", {"host": "127.0.0.1", "port": 8081}))
        self.assertEqual(_listen.describeAddress(UNIXAddress(b"/run/w.sock"), False), ("unix:/run/w.sock", {"path": "/run/w.sock"}))
        self.assertEqual(_listen.describeAddress(UNIXAddress("/run/w.sock"), True), ("tls:unix:/run/w.sock", {"path": "/run/w.sock"}))

    def test_allInOne(self) -> None:
        """
        The all-in-one daemon's publisher and subscriber listen where
        C{--publisher-listen} and C{--subscriber-listen} say; its msgqueue keeps TLS
        on C{--msgqueue-port}, where the stages link.
        """
        self.start(allinone, "--msgqueue-port", "9001", "--publisher-listen", "unix:/run/pub.sock",
                   "--publisher-listen", "tcp:9002:interface=127.0.0.1", "--subscriber-listen", "tls:unix:/run/sub.sock")
        tcp = sorted((port, interface, isinstance(f, TLSMemoryBIOFactory)) for port, f, _, interface in self.reactor.tcpServers)
        self.assertEqual(tcp, [(9001, "127.0.0.1", True), (9002, "127.0.0.1", False)])
        unix = sorted((path, isinstance(f, TLSMemoryBIOFactory)) for path, f, *_ in self.reactor.unixServers)
        self.assertEqual(unix, [("/run/pub.sock", False), ("/run/sub.sock", True)])
        self.assertEqual(sorted((host, port) for host, port, *_ in self.reactor.tcpClients),
                         [("127.0.0.1", 9001), ("127.0.0.1", 9001)])

    def test_allInOneDefaults(self) -> None:
        """
        Without the new options the all-in-one daemon listens as before.
        """
        self.start(allinone)
        self.assertEqual(sorted((port, interface) for port, _, _, interface in self.reactor.tcpServers),
                         [(8080, "127.0.0.1"), (8081, "127.0.0.1"), (8082, "127.0.0.1")])
        self.assertEqual(self.reactor.unixServers, [])


class CannotListenTests(TestCase):
    """
    A listener given with C{--listen} that cannot listen stops start-up with one
    line, as a port in use always did.
    """

    def failure(self, description: str) -> str:
        factory = Factory.forProtocol(Protocol)
        factory.routes = {}  # what listeningService reads of a stage's factory
        service = _common.listeningService(factory, [_listen.parseListener(reactor, description, certDir())])
        with self.assertRaises(SystemExit) as raised:
            service.privilegedStartService()
        message = str(raised.exception.code)
        self.assertNotIn("\n", message)
        return message

    def test_portInUse(self) -> None:
        """
        A TCP port in use is named with its interface.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            for description in (f"tcp:{port}:interface=127.0.0.1", f"ssl:{port}:interface=127.0.0.1"):
                message = self.failure(description)
                self.assertTrue(message.startswith(f"wsqueue: cannot listen on 127.0.0.1:{port}: "), message)

    def test_unixSocketUnusable(self) -> None:
        """
        A UNIX socket that cannot be made (its folder is missing, or its path is a
        socket in use) is named by its path.
        """
        folder = shortTemporaryFolder(self)
        path = os.path.join(folder, "missing", "wsq.sock")
        message = self.failure(f"unix:{path}")
        self.assertTrue(message.startswith(f"wsqueue: cannot listen on unix:{path}: "), message)
        path = os.path.join(folder, "taken.sock")
        with socket.socket(socket.AF_UNIX) as taken:
            taken.bind(path)
            taken.listen()
            message = self.failure(f"unix:{path}:lockfile=0")
        self.assertEqual(message, f"wsqueue: cannot listen on unix:{path}: [Errno 98] Address already in use")

    def test_failedAddress(self) -> None:
        """
        Twisted gives a UNIX socket's path as the port of its L{CannotListenError}.
        """
        error = OSError(98, "Address already in use")
        self.assertEqual(_common._failedAddress(CannotListenError(None, "/run/w.sock", error)), "unix:/run/w.sock")
        self.assertEqual(_common._failedAddress(CannotListenError("", 80, error)), "*:80")


class _Client(WebSocketClientProtocol):
    """
    A WebSocket client that queues the JSON frames it receives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[_Client] = Deferred()
        self.closed: Deferred[int | None] = Deferred()
        self.frames: DeferredQueue = DeferredQueue()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(AssertionError(f"the WebSocket did not open: {code} {reason}"))
        self.closed.callback(code)


def testCA() -> ssl.Certificate:
    with open(caPath(), "rb") as f:
        return ssl.Certificate.loadPEM(f.read())


def withTLS(endpoint):
    """
    C{endpoint} with TLS that verifies the test certificate and offers ALPN as
    browsers and curl do.
    """
    return wrapClientTLS(ssl.optionsForClientTLS("localhost", trustRoot=testCA(), acceptableProtocols=[b"http/1.1"]), endpoint)


async def openWebSocket(testCase, endpoint, url: str, clients: list[_Client] | None = None) -> _Client:
    """
    A WebSocket to C{url} through C{endpoint} as the demo account: added to
    C{clients} when given (whoever keeps them closes them), else dropped when the
    test ends.
    """
    factory = WebSocketClientFactory(url, headers={"Authorization": basicHeader("hello", "test")}, reactor=reactor)
    factory.protocol = _Client
    factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2)
    client = await withTimeout(endpoint.connect(factory), what=f"connecting to {url}")
    if clients is not None:
        clients.append(client)
        return await withTimeout(client.opened, what=f"opening {url}")

    def close() -> Deferred | None:
        if client.closed.called:
            return None
        client.dropConnection(abort=True)
        return withTimeout(client.closed, what="the client closing")

    testCase.addCleanup(close)
    return await withTimeout(client.opened, what=f"opening {url}")


async def assertSubscribes(testCase, client: _Client, topic: str = "news") -> None:
    """
    A subscriber stage answers C{client}'s subscription with its Ack: the WebSocket
    works end to end.
    """
    client.sendMessage(json.dumps({"Topic": topic, "Content": "sub", "Id": topic}).encode())
    testCase.assertEqual(await withTimeout(client.frames.get(), what="the subscription's Ack"), {"Ack": topic})


class RealListenerTests(TestCase):
    """
    A subscriber stage (whose msgqueue is away: it takes clients all the same)
    listening on loopback where C{--listen} says, reached by real clients.
    """

    timeout = 30

    def setUp(self) -> None:
        self.clients: list[_Client] = []

    def open(self, endpoint, url: str) -> Deferred[_Client]:
        return Deferred.fromCoroutine(openWebSocket(self, endpoint, url, self.clients))

    def startSubscriber(self, *descriptions: str):
        """
        A subscriber stage listening where C{descriptions} say; stopped when the test
        ends, as a daemon stops.  Its TCP ports (port 0 in a description: a free one)
        are in C{self.ports}, from its "listening" log lines.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        options = subscriber.Options()
        argv = ["--cert-dir", certDir(), "--queue", f"wss://localhost:{freePort()}"]
        for description in descriptions:
            argv += ["--listen", description]
        options.parseOptions(argv)
        # The link to the absent msgqueue tries once, then waits past the test.
        service = subscriber.buildSubscriber(options, reactor, retryPolicy=lambda attempt: 3600.0)
        service.privilegedStartService()
        service.startService()
        self.ports = [e["port"] for e in events if e["log_format"].startswith("{stage} listening on") and "port" in e]

        async def stop() -> None:
            # As a daemon stops: the service closes its clients (1001), which answer.
            await withTimeout(service.stopService(), what="the subscriber stopping")
            for client in self.clients:
                await withTimeout(client.closed, what="a client closed by the subscriber")

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return service

    async def test_sslWithALPN(self) -> None:
        """
        A TLS client offering ALPN, as browsers and curl do, reaches an C{ssl:}
        listener and gets http/1.1.
        """
        self.startSubscriber("ssl:0:interface=127.0.0.1")
        [port] = self.ports
        client = await self.open(withTLS(TCP4ClientEndpoint(reactor, "127.0.0.1", port)), f"wss://localhost:{port}/subscribe")
        self.assertEqual(client.transport.negotiatedProtocol, b"http/1.1")
        await assertSubscribes(self, client)

    async def test_tcpPlain(self) -> None:
        """
        A plain C{ws://} client reaches a C{tcp:} listener, and the slow-consumer
        bound measures that connection's backlog (it would be off if the listener did
        not wrap its connections as TLS does).
        """
        service = self.startSubscriber("tcp:0:interface=127.0.0.1")
        [port] = self.ports
        client = await self.open(TCP4ClientEndpoint(reactor, "127.0.0.1", port), f"ws://localhost:{port}/subscribe")
        await assertSubscribes(self, client)
        [connection] = service.factory.connections
        self.assertIsNotNone(unsentBytes(connection))

    async def test_unixPlain(self) -> None:
        """
        A plain client reaches a C{unix:} listener over its socket.
        """
        path = os.path.join(shortTemporaryFolder(self), "sub.sock")
        service = self.startSubscriber(f"unix:{path}")
        client = await self.open(UNIXClientEndpoint(reactor, path), "ws://localhost/subscribe")
        await assertSubscribes(self, client)
        [connection] = service.factory.connections
        self.assertIsNotNone(unsentBytes(connection))

    async def test_tlsUnix(self) -> None:
        """
        A TLS client reaches a C{tls:unix:} listener over its socket, verifies the
        certificate and gets http/1.1 by ALPN; a plain client gets no WebSocket there.
        """
        path = os.path.join(shortTemporaryFolder(self), "sub.sock")
        self.startSubscriber(f"tls:unix:{path}")
        client = await self.open(withTLS(UNIXClientEndpoint(reactor, path)), "wss://localhost/subscribe")
        self.assertEqual(client.transport.negotiatedProtocol, b"http/1.1")
        await assertSubscribes(self, client)
        with self.assertRaises(AssertionError):
            await self.open(UNIXClientEndpoint(reactor, path), "ws://localhost/subscribe")


class DaemonTests(TestCase):
    """
    Real daemons (C{twistd -n}) listening where C{--listen} says.
    """

    timeout = 90

    async def test_pipeline(self) -> None:
        """
        msgqueue on C{ssl:} (the links reach it with TLS), a publisher on plain
        C{tcp:} (as behind a TLS-terminating proxy) and a subscriber on
        C{tls:unix:}: a message published over C{ws://} reaches a subscriber over
        TLS on the UNIX socket.  Each says where it listens, in its log and its
        readiness events, and the publisher warns that it has no TLS.
        """
        mqPort, pubPort = freePort(), freePort()
        path = os.path.join(shortTemporaryFolder(self), "sub.sock")
        mq = Daemon(self, "wsqueue-msgqueue", ["--store", "memory"], port=mqPort,
                    listen=[f"ssl:{mqPort}:interface=127.0.0.1"])
        await mq.start()
        pub = Daemon(self, "wsqueue-publisher", ["--queue", mq.url], port=pubPort,
                     listen=[f"tcp:{pubPort}:interface=127.0.0.1"])
        sub = Daemon(self, "wsqueue-subscriber", ["--queue", mq.url], listen=[f"tls:unix:{path}"])
        await pub.start()
        await sub.start()
        await pub.waitForLinks()
        await sub.waitForLinks()

        self.assertEqual(sub.history[0], {"event": "listening", "stage": "subscriber", "path": path})
        self.assertEqual(pub.history[0], {"event": "listening", "stage": "publisher", "host": "127.0.0.1",
                                          "port": pubPort, "tls": False})
        self.assertIn(f"subscriber listening on tls:unix:{path} (/subscribe)", sub.logText())
        self.assertIn(f"publisher listening on ws://127.0.0.1:{pubPort} (/publish)", pub.logText())
        self.assertIn(f"msgqueue listening on wss://127.0.0.1:{mqPort} (/popmsg, /pushmsg)", mq.logText())
        self.assertIn(f"--listen tcp:{pubPort}:interface=127.0.0.1 serves plain ws:// WITHOUT TLS", pub.logText())
        self.assertNotIn("WITHOUT TLS", sub.logText() + mq.logText())

        receiver = await openWebSocket(self, withTLS(UNIXClientEndpoint(reactor, path)), "wss://localhost/subscribe")
        await assertSubscribes(self, receiver)
        sender = await openWebSocket(self, TCP4ClientEndpoint(reactor, "127.0.0.1", pubPort),
                                     f"ws://localhost:{pubPort}/publish")
        sender.sendMessage(json.dumps({"Topic": "news", "Content": "over --listen", "Id": "p"}).encode())
        self.assertEqual(await withTimeout(sender.frames.get(), what="the publisher's Ack"), {"Ack": "p"})
        message = await withTimeout(receiver.frames.get(), what="the message")
        self.assertEqual((message["Topic"], message["Content"]), ("news", "over --listen"))

    async def test_badDescription(self) -> None:
        """
        A daemon given a description Twisted does not know exits at once with one
        line, no traceback.
        """
        daemon = Daemon(self, "wsqueue-publisher", listen=["nosuchtype:1"])
        daemon.spawn()
        code = await daemon.waitForExit()
        self.assertNotEqual(code, 0)
        self.assertIn("wsqueue-publisher: --listen nosuchtype:1: Unknown endpoint type: 'nosuchtype'", daemon.output)
        self.assertNotIn("Traceback", daemon.output + daemon.logText())


def listeningSocket() -> socket.socket:
    """
    A TCP socket listening on a free loopback port, as systemd makes one for a
    .socket unit.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(50)
    return s


SYSTEMD_ENVIRONMENT = 'export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=plain:secure; exec "$@"'
"""What systemd does for a service started by a .socket unit with two sockets: it
passes them as descriptors 3 and 4 and names them, for this process alone
(C{LISTEN_PID}: the shell's pid is the one the daemon keeps after C{exec})."""


class SystemdDaemonTests(TestCase):
    """
    A daemon started as systemd socket activation starts it: listening sockets
    inherited as descriptors 3 and 4, announced in C{LISTEN_FDS}, C{LISTEN_PID} and
    C{LISTEN_FDNAMES} (which Twisted's C{systemd:} endpoint reads).
    """

    timeout = 60

    async def test_inheritedSockets(self) -> None:
        """
        C{systemd:domain=INET:index=0} serves plain C{ws://} on the first inherited
        socket, C{tls:systemd:domain=INET:name=secure} serves TLS on the second;
        clients reach both.
        """
        plain, secure = listeningSocket(), listeningSocket()
        ports = [s.getsockname()[1] for s in (plain, secure)]
        daemon = Daemon(
            self, "wsqueue-subscriber", ["--queue", f"wss://localhost:{freePort()}"],
            listen=["systemd:domain=INET:index=0", "tls:systemd:domain=INET:name=secure"],
            inherit={3: plain.fileno(), 4: secure.fileno()},
        )
        daemon.argv = ["/bin/sh", "-c", SYSTEMD_ENVIRONMENT, "sh", *daemon.argv]
        daemon.spawn()
        # The daemon has its own copies now.
        plain.close()
        secure.close()
        await daemon.waitReady()
        self.assertEqual(
            [event for event in daemon.history if event["event"] == "listening"],
            [{"event": "listening", "stage": "subscriber", "host": "127.0.0.1", "port": ports[0], "tls": False},
             {"event": "listening", "stage": "subscriber", "host": "127.0.0.1", "port": ports[1]}],
        )
        client = await openWebSocket(self, TCP4ClientEndpoint(reactor, "127.0.0.1", ports[0]),
                                     f"ws://localhost:{ports[0]}/subscribe")
        await assertSubscribes(self, client)
        client = await openWebSocket(self, withTLS(TCP4ClientEndpoint(reactor, "127.0.0.1", ports[1])),
                                     f"wss://localhost:{ports[1]}/subscribe")
        self.assertEqual(client.transport.negotiatedProtocol, b"http/1.1")
        await assertSubscribes(self, client)



class CertificateFilesTests(SynchronousTestCase):
    """
    Tests for L{tls.serverOptionsFromFiles}: what C{certKey=}, C{privateKey=} and
    C{extraCertChain=} come to, with the checks and ALPN of C{--cert-dir}.
    """

    def setUp(self) -> None:
        self.folder = self.mktemp()
        makeDevelopmentCertificates(self.folder)
        self.cert, self.key, self.ca = (os.path.join(self.folder, name) for name in ("server.crt", "server.key", "ca.crt"))

    def test_chainAndALPN(self) -> None:
        """
        The chain file's certificates follow the certificate; ALPN offers http/1.1.
        """
        options = tls.serverOptionsFromFiles(self.cert, self.key, self.ca)
        self.assertEqual([cert.digest("sha256") for cert in options.extraCertChain], [certificateDigest(self.ca)])
        with open(self.ca, "rb") as f:
            trustRoot = ssl.Certificate.loadPEM(f.read())
        offer = ssl.optionsForClientTLS("localhost", trustRoot=trustRoot, acceptableProtocols=[b"http/1.1"])
        server, serverSide, client, _ = handshake(options, offer)
        self.assertIsNone(serverSide.lost)
        self.assertEqual((server.negotiatedProtocol, client.negotiatedProtocol), (b"http/1.1", b"http/1.1"))

    def test_keyNotMatching(self) -> None:
        """
        A key that is not the certificate's is refused, naming both files.
        """
        e = self.assertRaises(tls.TLSConfigurationError, tls.serverOptionsFromFiles, self.cert,
                              os.path.join(self.folder, "ca.key"))
        self.assertIn(f"does not match certificate {self.cert}", str(e))
