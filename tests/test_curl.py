"""
Clients nobody on the project wrote, over real TLS on loopback: curl, C{openssl
s_client}, and a Twisted client offering ALPN as browsers do.

All of them offer TLS ALPN, and every one of them failed the TLS handshake with an
"internal error" alert until servers offered C{http/1.1} (L{wsqueue.tls.ALPN_PROTOCOLS}).
The processes are started through the reactor (nothing blocks) and killed, if still
running, when the test ends.
"""

from __future__ import annotations

import os

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.trial.unittest import FailTest, TestCase

from wsqueue.auth import basicHeader, makeAuthenticator
from wsqueue.client import ClientProtocol
from wsqueue.server import EndpointHandler, Limits, StageServerFactory

from .daemons import WatchedProcess, freePort, runProcess, spawnWatched, startDaemon
from .helpers import caPath, listenTLS, nextJSON, waitFor, withTimeout

CURL = "/usr/bin/curl"
OPENSSL = "/usr/bin/openssl"
UPGRADE_HEADERS = [
    "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
    "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
]


def testCA() -> ssl.Certificate:
    """
    The CA of the test certificates, to verify servers against.
    """
    with open(caPath(), "rb") as f:
        return ssl.Certificate.loadPEM(f.read())


def requireExecutable(path: str) -> None:
    """
    Fail, not skip, without the tool: these tests are the promise that curl works
    (.ci/run installs curl and openssl when they are missing).
    """
    if not os.access(path, os.X_OK):
        raise FailTest(f"{path} is not installed: apt-get install curl openssl")


def curl(testCase: TestCase, port: int, path: str, *options: str) -> WatchedProcess:
    """
    C{curl -v --cacert <test CA> [options] https://localhost:PORT/path} with the
    WebSocket upgrade headers.  Its standard error (unbuffered, unlike its output
    to a pipe) says what it offered and got over TLS and shows the response head.
    """
    return spawnWatched(testCase, [CURL, "-sS", "-v", "--cacert", caPath(), *options, *UPGRADE_HEADERS,
                                   f"https://localhost:{port}{path}"], WatchedProcess(closeStdin=True))


async def responseHead(watched: WatchedProcess) -> bytes:
    """
    The status line and headers of curl's answer (its C{< } lines), once all are in.
    """
    await waitFor(lambda: b"\n< \r\n" in watched.err or watched.ended.called, what="curl's response")
    head = b"".join(line[2:] for line in watched.err.splitlines(keepends=True) if line.startswith(b"< "))
    assert head.endswith(b"\r\n\r\n"), watched.err
    return head


class _Answering(EndpointHandler):
    def received(self, payload: bytes, isBinary: bool) -> None:
        self.connection.send(payload)


class LoopbackTests(TestCase):
    """
    The clients against a wsqueue server listening as every daemon does
    (L{wsqueue.tls.serverEndpoint}, L{wsqueue.server.StageServerFactory}).
    """

    timeout = 30

    def setUp(self) -> None:
        self.factory = StageServerFactory(
            {"/subscribe": _Answering}, makeAuthenticator(None, reactor), Limits(), reactor
        )
        self.port = listenTLS(self, self.factory)

    async def test_curlUpgrades(self) -> None:
        """
        curl with Basic auth and the upgrade headers (C{--http1.1}: it offers ALPN
        http/1.1 only) gets C{101 Switching Protocols} after ALPN selected http/1.1.
        """
        requireExecutable(CURL)
        watched = curl(self, self.port, "/subscribe", "--http1.1", "-u", "hello:test")
        head = await responseHead(watched)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols"), head)
        self.assertIn(b"ALPN: server accepted http/1.1", watched.err)
        await waitFor(lambda: self.factory.connections, what="the connection open on the server")
        [connection] = self.factory.connections
        self.assertEqual((connection.user, connection.path), ("hello", "/subscribe"))
        connection.transport.loseConnection()  # curl would wait for a body
        await withTimeout(watched.ended, what="curl to exit")
        await waitFor(lambda: not self.factory.connections, what="the connection gone")

    async def test_curlWithoutCredentials(self) -> None:
        """
        curl without credentials gets C{401} with a Basic challenge; with its default
        ALPN offer (h2, then http/1.1) the server selects http/1.1.
        """
        requireExecutable(CURL)
        watched = curl(self, self.port, "/subscribe")
        self.assertEqual(await withTimeout(watched.ended, what="curl to exit"), 0, watched.err)
        head = await responseHead(watched)
        self.assertTrue(head.startswith(b"HTTP/1.1 401"), head)
        self.assertRegex(head, rb"(?i)\r\nWWW-Authenticate: Basic")
        self.assertIn(b"ALPN: offers h2,http/1.1", watched.err)
        self.assertIn(b"ALPN: server accepted http/1.1", watched.err)

    async def test_curlForeignOrigin(self) -> None:
        """
        (#11, item 3) A handshake with credentials but another site's Origin gets 403.
        """
        requireExecutable(CURL)
        watched = curl(self, self.port, "/subscribe", "--http1.1", "-u", "hello:test",
                       "-H", "Origin: https://evil.example")
        self.assertEqual(await withTimeout(watched.ended, what="curl to exit"), 0, watched.err)
        head = await responseHead(watched)
        self.assertTrue(head.startswith(b"HTTP/1.1 403"), head)

    async def test_opensslClient(self) -> None:
        """
        C{openssl s_client -alpn http/1.1} completes the handshake, verifies the
        server and gets http/1.1.
        """
        requireExecutable(OPENSSL)
        _, output = await runProcess([
            OPENSSL, "s_client", "-alpn", "http/1.1", "-connect", f"127.0.0.1:{self.port}",
            "-servername", "localhost", "-verify_hostname", "localhost", "-CAfile", caPath(), "-verify_return_error",
        ], timeout=20)
        self.assertIn("ALPN protocol: http/1.1", output)
        self.assertIn("Verify return code: 0 (ok)", output)
        self.assertNotIn("alert", output)

    async def test_alpnWebSocketClient(self) -> None:
        """
        A WebSocket client whose TLS offers ALPN as browsers do (http/1.1) opens the
        WebSocket and exchanges messages.
        """
        creator = ssl.optionsForClientTLS("localhost", trustRoot=testCA(), acceptableProtocols=[b"http/1.1"])
        url = f"wss://localhost:{self.port}/subscribe"
        factory = WebSocketClientFactory(url, headers={"Authorization": basicHeader("hello", "test")}, reactor=reactor)
        factory.protocol = ClientProtocol
        factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2)
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", self.port))
        protocol = await endpoint.connect(factory)
        await withTimeout(protocol.opened, what="the WebSocket open")
        self.assertEqual(protocol.transport.negotiatedProtocol, b"http/1.1")
        protocol.sendMessage(b'{"echo": 1}')
        self.assertEqual(await nextJSON(protocol), {"echo": 1})
        protocol.sendClose(1000)
        await withTimeout(protocol.closed, what="the close")


class DaemonTests(TestCase):
    """
    curl against a real subscriber daemon (C{twistd -n wsqueue-subscriber}).
    """

    timeout = 60

    async def test_subscriberDaemon(self) -> None:
        """
        The daemon answers curl's upgrade with 101 for the demo account and with
        401 without credentials.  (Its msgqueue is away: a subscriber takes its
        clients all the same.)
        """
        requireExecutable(CURL)
        subscriber = await startDaemon(self, "wsqueue-subscriber", "--queue", f"wss://localhost:{freePort()}")
        watched = curl(self, subscriber.port, "/subscribe", "--http1.1", "-u", "hello:test")
        head = await responseHead(watched)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols"), head)
        self.assertIn(b"ALPN: server accepted http/1.1", watched.err)
        refused = curl(self, subscriber.port, "/subscribe", "--http1.1")
        await withTimeout(refused.ended, what="curl to exit")
        self.assertTrue((await responseHead(refused)).startswith(b"HTTP/1.1 401"), refused.err)
        self.assertRegex(await responseHead(refused), rb"(?i)\r\nWWW-Authenticate: Basic")
