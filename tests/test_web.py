"""
The public daemons' HTTP side in memory: the hand-off of a plain HTTP request from
the WebSocket protocol to the site (L{wsqueue.server.StageServerProtocol}), and the
resources (L{wsqueue.web}) driven through it with raw requests, on a
L{MemoryReactorClock} (Autobahn's timers included, through L{MemoryNetwork}).
The same statuses against real daemons with curl: L{tests.test_http}.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.access import Access
from wsqueue.auth import basicHeader, makeAuthenticator
from wsqueue.connection import HANDSHAKE_TIMEOUT, Limits
from wsqueue.publisher import Forwarder
from wsqueue.server import EndpointHandler, StageServerFactory, isPlainHTTP
from wsqueue.signin import Sessions, Tickets
from wsqueue.testing import MemoryNetwork, MemoryServerTransport, RecordingLink
from wsqueue.web.account import LoginResource, LogoutResource, SessionResource, TicketResource
from wsqueue.web.console import consoleRoutes, contentSecurityPolicy, publisherURL
from wsqueue.web.publish import PublishResource
from wsqueue.web.site import Root, StageSite, WebSocketOnly

SECRET = b"k" * 32
AUTHORIZATION = basicHeader("hello", "test")


def httpRequest(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost:8081", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parseResponse(data: bytes) -> tuple[int, dict[str, str], object]:
    """
    The status, headers and JSON body of one response (chunked or not).
    """
    head, _, body = data.partition(b"\r\n\r\n")
    statusLine, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        chunks, rest = [], body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            length = int(size, 16)
            if length == 0:
                break
            chunks.append(rest[:length])
            rest = rest[length + 2:]
        body = b"".join(chunks)
    try:
        decoded = json.loads(body) if body else None
    except ValueError:
        decoded = body
    return int(statusLine.split()[1]), headers, decoded


class _Echo(EndpointHandler):
    def received(self, payload: bytes, isBinary: bool) -> None:
        self.connection.send(payload)


class HTTPSide(SynchronousTestCase):
    """
    A publisher-like server in memory: C{/publish} on WebSocket and HTTP, and the
    sign-in resources.
    """

    def setUp(self) -> None:
        self.network = MemoryNetwork.forTest(self)
        self.clock = self.network.clock
        self.factory = StageServerFactory({"/publish": _Echo}, makeAuthenticator(None, self.clock), Limits(), self.clock)
        self.tickets = Tickets(SECRET, self.clock)
        self.sessions = Sessions(SECRET, self.clock, 3600, self.factory.authenticator.stampOf)
        access = Access(self.factory.authenticator, self.factory.allowsOrigin, self.tickets, self.sessions)
        self.factory.access = access
        self.forwarder = Forwarder(self.clock, maxBuffered=10)
        self.link = RecordingLink()
        self.forwarder.linkOpened(self.link)  # type: ignore[arg-type]
        self.factory.site = StageSite(Root({
            b"publish": PublishResource(access, self.forwarder, self.clock, timeout=30.0),
            b"subscribe": WebSocketOnly("/subscribe"),
            b"ticket": TicketResource(access, self.tickets),
            b"login": LoginResource(access, self.sessions),
            b"logout": LogoutResource(access, self.sessions),
            b"session": SessionResource(access),
            **consoleRoutes("wss://localhost:8081/publish"),
        }), self.clock, maxBody=1000)

    def connect(self, data: bytes) -> MemoryServerTransport:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = MemoryServerTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        self.protocol = protocol
        self.clock.advance(0)  # the forwarder's flush
        return transport

    def ask(self, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, dict[str, str], object]:
        transport = self.connect(httpRequest(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()}))
        return parseResponse(transport.value())

    def publish(self, body: object, **headers: str) -> MemoryServerTransport:
        payload = json.dumps(body).encode()
        return self.connect(httpRequest("POST", "/publish", payload, {"Authorization": AUTHORIZATION, **headers}))

    def ackAll(self) -> None:
        upTo = max(entry[0] for frame in self.link.sentJSON() for entry in frame["Messages"])
        self.forwarder.linkReceived(self.link, json.dumps({"Ack": upTo}).encode(), False)  # type: ignore[arg-type]


class HandOffTests(HTTPSide):
    """
    One port, two protocols: WebSocket handshakes stay with Autobahn; everything
    else goes to the site, with the bytes read so far.
    """

    def test_isPlainHTTP(self) -> None:
        self.assertFalse(isPlainHTTP(b"POST /publish HTTP/1.1\r\nHost: x\r\n"))  # not all there yet
        self.assertTrue(isPlainHTTP(b"POST /publish HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertTrue(isPlainHTTP(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertFalse(isPlainHTTP(b"GET /publish HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"))
        self.assertFalse(isPlainHTTP(b"GET /p HTTP/1.1\r\nUPGRADE: WebSocket\r\nHost: x\r\n\r\n"))
        self.assertTrue(isPlainHTTP(b"POST /p HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"))

    def test_webSocketUnchanged(self) -> None:
        """
        A WebSocket handshake on the same port opens a WebSocket, as before.
        """
        lines = ["GET /publish HTTP/1.1", "Host: localhost", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                 f"Authorization: {AUTHORIZATION}"]
        transport = self.connect(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"), transport.value())

    def test_requestInPieces(self) -> None:
        """
        A request whose head arrives in pieces is handed over once it is whole,
        and its body that comes later reaches the site.
        """
        data = httpRequest("POST", "/ticket", b"", {"Authorization": AUTHORIZATION})
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = MemoryServerTransport()
        protocol.makeConnection(transport)
        for index in range(len(data)):
            protocol.dataReceived(data[index:index + 1])
        status, _, body = parseResponse(transport.value())
        self.assertEqual(status, 200)
        self.assertEqual(self.tickets.redeem(body["Ticket"]), "hello")

    def test_keepAlive(self) -> None:
        """
        Two requests on one connection get two answers (HTTP/1.1 keep-alive).
        """
        transport = self.connect(httpRequest("GET", "/session") + httpRequest("GET", "/config.json"))
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 2, transport.value())
        self.assertFalse(transport.disconnecting)

    def test_notDroppedByHandshakeTimeout(self) -> None:
        """
        Autobahn's opening-handshake timeout does not drop an HTTP request that
        waits for msgqueue longer than it.
        """
        transport = self.publish({"Topic": "t", "Content": "x"})
        self.clock.advance(HANDSHAKE_TIMEOUT + 1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.ackAll()
        self.assertEqual(parseResponse(transport.value())[:3:2], (200, {"Acked": 1}))

    def test_serverHeader(self) -> None:
        status, headers, _ = self.ask("GET", "/nowhere")
        self.assertEqual((status, headers["server"]), (404, "wsqueue"))
        self.assertEqual(headers["x-content-type-options"], "nosniff")


class PublishResourceTests(HTTPSide):
    """
    C{POST /publish}: answered once msgqueue has answered every message.
    """

    def test_acked(self) -> None:
        transport = self.publish([{"Topic": "a", "Content": "1"}, {"Topic": "b", "Content": "2", "Id": "x"}])
        self.assertEqual(transport.value(), b"", "no answer before msgqueue's")
        [frame] = self.link.sentJSON()
        self.assertEqual([entry[1:] for entry in frame["Messages"]], [["a", "1"], ["b", "2"]])
        self.ackAll()
        self.assertEqual(parseResponse(transport.value())[:3:2], (200, {"Acked": 2}))

    def test_badInput(self) -> None:
        """
        One bad message refuses the whole body, and nothing goes to msgqueue.
        """
        transport = self.publish([{"Topic": "a", "Content": "1"}, {"Topic": "a b", "Content": "2"}])
        status, _, body = parseResponse(transport.value())
        self.assertEqual(status, 400)
        self.assertEqual(body, {"Error": "message 1: Topic must not contain whitespace or control characters"})
        self.assertEqual(self.link.sent, [])

    def test_tooLarge(self) -> None:
        transport = self.publish({"Topic": "a", "Content": "x" * 2000})
        self.assertEqual(parseResponse(transport.value())[:3:2], (413, {"Error": "request body is larger than 1000 bytes"}))
        self.assertEqual(self.link.sent, [])

    def test_linkDown(self) -> None:
        self.link.isOpen = False
        transport = self.publish({"Topic": "a", "Content": "1"})
        self.assertEqual(parseResponse(transport.value())[:3:2],
                         (503, {"Error": "msgqueue is unreachable; nothing was published", "Acked": 0}))

    def test_refusedByMsgqueue(self) -> None:
        """
        A message msgqueue refuses makes the answer 503, with how many were stored.
        """
        transport = self.publish([{"Topic": "a", "Content": "1"}, {"Topic": "a", "Content": "2"}])
        [frame] = self.link.sentJSON()
        first, second = (entry[0] for entry in frame["Messages"])
        self.forwarder.linkReceived(self.link, json.dumps({"Ack": first}).encode(), False)  # type: ignore[arg-type]
        self.forwarder.linkReceived(  # type: ignore[arg-type]
            self.link, json.dumps({"Error": "store is full", "Id": second}).encode(), False)
        self.assertEqual(parseResponse(transport.value())[:3:2], (503, {"Error": "store is full", "Acked": 1}))

    def test_bufferFull(self) -> None:
        """
        Past the publisher's buffer (and its overshoot), the rest of the body is not
        taken: 503 once msgqueue has stored what was, saying how many.
        """
        messages = [{"Topic": "a", "Content": str(i)} for i in range(150)]
        self.factory.site.maxBody = 100_000  # type: ignore[union-attr]
        transport = self.publish(messages)
        taken = self.forwarder.held
        self.assertLess(taken, 150)
        self.ackAll()
        status, _, body = parseResponse(transport.value())
        self.assertEqual(status, 503)
        self.assertEqual(body["Acked"], taken)  # type: ignore[index]
        self.assertIn("buffer is full", body["Error"])  # type: ignore[index]

    def test_shuttingDown(self) -> None:
        self.forwarder.drain()
        transport = self.publish({"Topic": "a", "Content": "1"})
        self.assertEqual(parseResponse(transport.value())[:3:2],
                         (503, {"Error": "publisher is shutting down; message not accepted", "Acked": 0}))

    def test_timeout(self) -> None:
        transport = self.publish({"Topic": "a", "Content": "1"})
        self.clock.advance(30.0)
        status, _, body = parseResponse(transport.value())
        self.assertEqual((status, body["Acked"]), (503, 0))  # type: ignore[index]
        self.assertIn("did not acknowledge within 30 s", body["Error"])  # type: ignore[index]
        self.ackAll()  # late: nothing more is written
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)

    def test_clientGone(self) -> None:
        """
        An answer for a client that has gone is dropped, not an error.
        """
        transport = self.publish({"Topic": "a", "Content": "1"})
        transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.ackAll()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_methods(self) -> None:
        status, headers, body = self.ask("DELETE", "/publish", Authorization=AUTHORIZATION)
        self.assertEqual((status, headers["allow"]), (405, "GET, POST"))
        status, _, body = self.ask("GET", "/publish")
        self.assertEqual(status, 400)
        self.assertIn("WebSocket endpoint", body["Error"])  # type: ignore[index]
        status, _, _ = self.ask("HEAD", "/subscribe")
        self.assertEqual(status, 400)


class AccountResourceTests(HTTPSide):
    """
    C{/login}, C{/logout}, C{/session} and C{/ticket} in memory.
    """

    def login(self, **headers: str) -> tuple[int, dict[str, str], object]:
        return self.ask("POST", "/login", b"user=hello&password=test",
                        Content_Type="application/x-www-form-urlencoded", **headers)

    def test_loginSessionTicket(self) -> None:
        status, headers, body = self.login()
        self.assertEqual((status, body["User"]), (200, "hello"))  # type: ignore[index]
        cookie = headers["set-cookie"].split(";")[0]
        self.assertEqual(self.ask("GET", "/session", Cookie=cookie)[::2], (200, {"User": "hello"}))
        status, _, body = self.ask("POST", "/ticket", Cookie=cookie, Origin="https://localhost:8081")
        self.assertEqual(status, 200)
        self.assertEqual(self.tickets.redeem(body["Ticket"]), "hello")  # type: ignore[index]
        self.assertEqual(body["Expires"], 60)  # type: ignore[index]

    def test_cookieNeedsOrigin(self) -> None:
        cookie = self.login()[1]["set-cookie"].split(";")[0]
        status, _, body = self.ask("POST", "/ticket", Cookie=cookie)
        self.assertEqual((status, body), (403, {"Error": "a session cookie is accepted only with an Origin header"}))
        status, _, body = self.ask("POST", "/ticket", Cookie=cookie, Origin="https://localhost:9999")
        self.assertEqual((status, body), (403, {"Error": "Origin not allowed"}))

    def test_browserNotChallenged(self) -> None:
        """
        A 401 asks programs for a password (C{WWW-Authenticate}), not browsers, which
        would pop up a dialog over the console.
        """
        _, headers, _ = self.ask("POST", "/ticket")
        self.assertEqual(headers["www-authenticate"], 'Basic realm="wsqueue"')
        status, headers, _ = self.ask("POST", "/ticket", Origin="https://localhost:8081")
        self.assertEqual(status, 401)
        self.assertNotIn("www-authenticate", headers)

    def test_expiredSession(self) -> None:
        cookie = self.login()[1]["set-cookie"].split(";")[0]
        self.clock.advance(3600)
        self.assertEqual(self.ask("GET", "/session", Cookie=cookie)[0], 401)

    def test_internalAccountHasNoSession(self) -> None:
        self.factory.authenticator.allowInternalAccount("wsqueue-internal", "secret")
        status, headers, body = self.ask("POST", "/login", b"user=wsqueue-internal&password=secret",
                                         Content_Type="application/x-www-form-urlencoded")
        self.assertEqual((status, body), (401, {"Error": "wrong user name or password"}))
        self.assertNotIn("set-cookie", headers)

    def test_logout(self) -> None:
        status, headers, body = self.ask("POST", "/logout", Origin="https://localhost:8081")
        self.assertEqual((status, body), (200, {"User": None}))
        self.assertIn("Max-Age=0", headers["set-cookie"])


class ConsoleTests(SynchronousTestCase):
    """
    The console's URL and policy helpers.
    """

    def test_publisherURL(self) -> None:
        self.assertEqual(publisherURL(None, "example.org:8082"), "wss://example.org:8081/publish")
        self.assertEqual(publisherURL(None, "[::1]:8082", 9000), "wss://[::1]:9000/publish")
        self.assertEqual(publisherURL(None, "example.org"), "wss://example.org:8081/publish")
        self.assertEqual(publisherURL("wss://p.example/publish", "example.org:8082"), "wss://p.example/publish")

    def test_policy(self) -> None:
        policy = contentSecurityPolicy("wss://p.example:9443/publish").decode()
        self.assertIn("connect-src 'self' wss://p.example:9443;", policy)
        self.assertNotIn("unsafe", policy)
