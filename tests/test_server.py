"""
What every server shares (L{wsqueue.server}) and the link's shutdown: errors stay
inside the connection, and stopping closes WebSockets with 1001.
"""

from __future__ import annotations

import socket

from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from wsqueue._compat import unsentBytes
from wsqueue.auth import basicHeader, makeAuthenticator
from wsqueue.connection import Limits
from wsqueue.link import HandshakeFailed, LinkOwner
from wsqueue.server import ConnectionCloser, EndpointHandler, StageServerFactory, StageServerProtocol
from wsqueue.wire import WireError

from .helpers import Clients, listenTLS, nextJSON, noFrameWithin, rawRequest, upgradeRequest, waitFor
from .standins import StandInQueue, startLink


class Broken(EndpointHandler):
    def received(self, payload: bytes, isBinary: bool) -> None:
        raise ZeroDivisionError("a bug")


class Refusing(EndpointHandler):
    def __init__(self, connection, request) -> None:
        raise ConnectionDeny(403, "not you")


def crashing(connection, request):
    raise RuntimeError("route bug")


class ServerTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        routes = {"/echo": EndpointHandler, "/broken": Broken, "/refusing": Refusing, "/crashing": crashing}
        self.factory = StageServerFactory(routes, makeAuthenticator(None, reactor), Limits(), reactor)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)

    async def test_refusalLoggedOnce(self) -> None:
        """
        (#8, item 12) A refused handshake is one line in the server's log (not three:
        Autobahn's own two repeated it), and the factory logs no start or stop lines.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        response = await rawRequest(self.port, upgradeRequest(self.port, "/echo", basicHeader("hello", "wrong")))
        self.assertIn(b" 401 ", response.split(b"\r\n", 1)[0])
        await waitFor(lambda: [e for e in events if "refused" in e.get("log_format", "")], what="the refusal line")
        serverSide = [e for e in events if "Client" not in e.get("log_namespace", "")]
        self.assertEqual(len(serverSide), 1, [e.get("log_format") for e in serverSide])

    async def test_stopClosesWithGoingAway(self) -> None:
        """
        Stopping the daemon closes every WebSocket with 1001 and waits for the close.
        """
        first = await self.clients.connect(self.port, "/echo")
        second = await self.clients.connect(self.port, "/echo")
        await ConnectionCloser(self.factory).stopService()
        for client in (first, second):
            code, _ = await client.closed
            self.assertEqual(code, 1001)
        self.assertEqual(self.factory.connections, set())

    async def test_handshakeLeftoversForgotten(self) -> None:
        """
        An open connection keeps nothing of its opening handshake (memory per idle
        client), and still works.
        """
        client = await self.clients.connect(self.port, "/broken")
        [connection] = self.factory.connections
        self.assertEqual([name for name in StageServerProtocol._HANDSHAKE_LEFTOVERS if hasattr(connection, name)], [])
        client.sendMessage(b"x")
        self.assertEqual(await nextJSON(client), {"Error": "internal error"})
        self.flushLoggedErrors(ZeroDivisionError)

    async def test_handlerBugBecomesErrorFrame(self) -> None:
        """
        An exception in a handler is logged and the client gets {"Error": "internal
        error"}, not a traceback; the connection stays open.
        """
        client = await self.clients.connect(self.port, "/broken")
        client.sendMessage(b"x")
        self.assertEqual(await nextJSON(client), {"Error": "internal error"})
        client.sendMessage(b"y")
        self.assertEqual(await nextJSON(client), {"Error": "internal error"})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    async def test_handlerMayDeny(self) -> None:
        """
        A handler refusing a request in its constructor answers with its own status.
        """
        e = await self.assertFailure(self.clients.connect(self.port, "/refusing"), HandshakeFailed)
        self.assertEqual(e.status, 403)

    async def test_routeBugIs500(self) -> None:
        """
        An unexpected error while accepting a connection is a 500 without details.
        """
        response = await rawRequest(self.port, upgradeRequest(self.port, "/crashing", basicHeader("hello", "test")))
        self.assertTrue(response.startswith(b"HTTP/1.1 500 internal error"), response)
        self.assertNotIn(b"route bug", response)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class LinkShutdownTests(TestCase):
    timeout = 20

    async def test_stopClosesLinkWithGoingAway(self) -> None:
        """
        Stopping a stage closes its link to msgqueue with 1001.
        """
        queue = StandInQueue(self)
        link = startLink(self, queue.listen(), "/popmsg", _Owner())
        await waitFor(lambda: queue.poppers and link.protocol, what="the link open on both ends")
        connection = queue.poppers[0].connection
        await link.stopService()
        await waitFor(lambda: connection.remoteCloseCode is not None, what="the close frame")
        self.assertEqual(connection.remoteCloseCode, 1001)


class LinkStartDelayTests(TestCase):
    timeout = 20

    async def test_startDelay(self) -> None:
        """
        A link with a start delay (the subscriber's --resume-grace) connects only
        after it, and stopping before then cancels it.
        """
        queue = StandInQueue(self)
        port = queue.listen()
        started = reactor.seconds()
        link = startLink(self, port, "/popmsg", _Owner(), startDelay=0.3)
        await waitFor(lambda: queue.poppers and link.protocol, what="the delayed link")
        self.assertGreaterEqual(reactor.seconds() - started, 0.3)
        early = startLink(self, port, "/popmsg", _Owner(), startDelay=30)
        await early.stopService()
        self.assertFalse(early._delayedStart.active())
        self.assertEqual(len(queue.poppers), 1)


class _Owner(LinkOwner):
    def linkReceived(self, link, payload, isBinary) -> None:
        pass


def shrinkSocketBuffers(connection: StageServerProtocol, client) -> None:
    """
    Make the kernel hold little for a connection (the server's send buffer, the
    client's receive buffer), so that what the peer does not read piles up in the
    server's own buffers after kilobytes instead of megabytes.
    """
    connection.transport.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.transport.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def abortBoth(client, connection: StageServerProtocol) -> None:
    """
    Abort a connection on both ends and wait until both know.  (A client that
    does not read would only learn of a server's abort when it next writes, and
    Autobahn leaves a closing handshake's timer running after the connection is
    lost: closing it the usual way would leave the reactor dirty.)
    """
    for protocol in (client, connection):
        if protocol.transport is not None and protocol.state != protocol.STATE_CLOSED:
            protocol.transport.abortConnection()
    await waitFor(lambda: client.closed.called and connection.state == connection.STATE_CLOSED, what="both ends closed")


async def nextTurns(count: int = 1) -> None:
    """
    Let the reactor run C{count} times (writes reach the kernel, reads arrive).
    """
    for _ in range(count):
        await task.deferLater(reactor, 0.001, lambda: None)


class UnsentBytesTests(TestCase):
    timeout = 20

    async def test_realTLSConnection(self) -> None:
        """
        On a real TLS connection whose peer does not read, unsentBytes grows with
        what is written once the kernel's buffers are full: it reads Twisted's private
        write buffers, and this fails if a Twisted release changes them.
        """
        factory = StageServerFactory({"/x": EndpointHandler}, makeAuthenticator(None, reactor), Limits(), reactor)
        port = listenTLS(self, factory)
        client = await Clients(self).connect(port, "/x")
        [connection] = factory.connections
        self.assertLess(unsentBytes(connection), 0)
        client.transport.pauseProducing()
        shrinkSocketBuffers(connection, client)
        chunk = b"x" * 65536
        samples = []
        for _ in range(40):
            connection.transport.write(chunk)  # raw bytes under TLS: the client reads nothing
            await nextTurns()
            samples.append(unsentBytes(connection))
        self.assertEqual(samples, sorted(samples))
        # Most chunks wait whole once the kernel's buffers are full.
        self.assertGreater(samples[-1], 20 * len(chunk), samples)
        await abortBoth(client, connection)

    def test_unknownTransport(self) -> None:
        """
        A transport that does not keep Twisted's write buffer says nothing (None), so
        callers fall back to their own count.
        """
        connection = type("Connection", (), {"transport": object()})()
        self.assertIsNone(unsentBytes(connection))

    def test_buffered(self) -> None:
        """
        What waits in the TCP transport under TLS beyond its pause threshold: the
        unsent part of dataBuffer plus the pending writes, less bufferSize.
        """
        tcp = type("TCP", (), {"dataBuffer": b"x" * 100, "offset": 40, "_tempDataLen": 70, "bufferSize": 50})()
        connection = type("Connection", (), {"transport": type("TLS", (), {"transport": tcp})()})()
        self.assertEqual(unsentBytes(connection), 80)


class _Measuring(StageServerProtocol):
    """
    Records the most bytes ever waiting for the peer right after a write.
    """

    mostWaiting = 0

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        super().sendData(data, sync, chopsize)
        self._measure()

    def sendFrames(self, data: bytes) -> None:
        super().sendFrames(data)
        self._measure()

    def _measure(self) -> None:
        waiting = unsentBytes(self)
        if waiting is not None:
            self.mostWaiting = max(self.mostWaiting, waiting)


class _ErrorForEverything(EndpointHandler):
    """
    Answers every frame with an Error carrying its number, as /publish answers a
    client sending with Ids (an Ack or an Error per message).
    """

    def __init__(self, connection, request) -> None:
        super().__init__(connection, request)
        self.count = 0

    def received(self, payload: bytes, isBinary: bool) -> None:
        self.count += 1
        self.connection.sendError(WireError("refused", self.count, True))


class PeerBufferTests(TestCase):
    """
    Everything queued for a peer counts against L{Limits.maxPeerBuffer}: a client
    that makes the server write (pongs, Errors) and never reads is closed as a slow
    consumer, and aborted when it does not read the close either.
    """

    timeout = 30
    limit = 64 * 1024

    def setUp(self) -> None:
        routes = {"/x": EndpointHandler, "/errors": _ErrorForEverything}
        self.factory = StageServerFactory(routes, makeAuthenticator(None, reactor), Limits(maxPeerBuffer=self.limit), reactor)
        self.factory.protocol = _Measuring
        # Autobahn aborts a connection whose closing handshake is not answered in time.
        self.factory.setProtocolOptions(closeHandshakeTimeout=1)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    async def openStalled(self, path: str):
        """
        A client on C{path} that reads nothing from now on, and its server connection.
        """
        client = await self.clients.connect(self.port, path)
        [connection] = self.factory.connections
        client.transport.pauseProducing()
        shrinkSocketBuffers(connection, client)
        return client, connection

    async def flood(self, send, connection, count: int) -> int:
        """
        Call C{send()} C{count} times, 200 per reactor turn, stopping early once the
        server closes the connection; return how many were sent.
        """
        sent = 0
        while sent < count and connection.state == connection.STATE_OPEN:
            for _ in range(200):
                send()
            sent += 200
            await nextTurns()
        return sent

    def slowConsumerWarnings(self) -> list:
        return [event for event in self.events if "slow consumer" in event.get("log_format", "")]

    async def assertClosedAsSlowConsumer(self, client, connection) -> None:
        await waitFor(lambda: connection.state == connection.STATE_CLOSED, timeout=10,
                      what="the server to drop the client that never reads")
        await abortBoth(client, connection)
        self.assertTrue(connection.slowConsumer)
        self.assertEqual(connection.localCloseCode, 1008)
        self.assertFalse(connection.wasClean)  # aborted: the close was never read
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(len(self.slowConsumerWarnings()), 1)
        # Only the close frame (a few bytes) ever went past the bound.
        self.assertLessEqual(connection.mostWaiting, self.limit + 256)

    async def test_pingsNeverRead(self) -> None:
        """
        A client that sends thousands of pings and never reads makes the server
        queue a pong for each: past the bound it is closed with 1008 (logged once),
        then aborted, and what waited for it never passed the bound.
        """
        client, connection = await self.openStalled("/x")
        sent = await self.flood(lambda: client.sendPing(b"p" * 125), connection, 20_000)
        await self.assertClosedAsSlowConsumer(client, connection)
        self.assertLess(sent, 20_000)

    async def test_errorsNeverRead(self) -> None:
        """
        A client that sends frames answered one by one (Acks, Errors) and never
        reads is closed the same way.
        """
        client, connection = await self.openStalled("/errors")
        await self.flood(lambda: client.sendMessage(b"{}"), connection, 20_000)
        await self.assertClosedAsSlowConsumer(client, connection)
        self.assertGreater(connection.handler.count, 1000)

    async def test_readingClientUnaffected(self) -> None:
        """
        A client that reads gets a pong for each of its thousands of pings and an
        answer for each frame, and stays connected.
        """
        client = await self.clients.connect(self.port, "/errors")
        [connection] = self.factory.connections
        pongs = []
        client.onPong = pongs.append
        for round in range(1, 51):
            for _ in range(100):
                client.sendPing(b"p" * 125)
                client.sendMessage(b"{}")
            await waitFor(lambda n=100 * round: len(pongs) == len(client.frames.pending) == n, what="every answer")
        self.assertTrue(connection.isOpen)
        self.assertFalse(connection.slowConsumer)
        self.assertEqual(self.slowConsumerWarnings(), [])
        self.assertLess(connection.mostWaiting, self.limit)


class _CountingPongs(StageServerProtocol):
    """
    Counts the answers to its own pings (Autobahn's auto-ping).
    """

    autoPongs = 0

    def onAutoPong(self, *args) -> None:
        self.autoPongs += 1


class PauseReadingTests(TestCase):
    """
    Tests for L{StageServerProtocol.pauseReading} and C{resumeReading}: a peer that
    flow control stops reading is not dropped for the pongs it cannot deliver, and
    is pinged again once reading resumes; a dead peer is still dropped.

    Pings every second, and a peer is dropped two seconds after an unanswered one.
    (Autobahn's timers fire on whole seconds, so a shorter timeout could expire a
    few milliseconds after its ping.)
    """

    timeout = 30

    def setUp(self) -> None:
        routes = {"/errors": _ErrorForEverything}
        self.factory = StageServerFactory(routes, makeAuthenticator(None, reactor), Limits(pingInterval=1), reactor)
        self.factory.protocol = _CountingPongs
        self.factory.setProtocolOptions(autoPingTimeout=2)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)

    async def test_pausedWhileAPingIsOutstanding(self) -> None:
        """
        Reading paused after a ping went out and before its pong was read: the peer
        stays connected across several ping intervals (and is not pinged meanwhile),
        what it sends is read once reading resumes, and it is pinged again and
        answers after the resume.
        """
        client = await self.clients.connect(self.port, "/errors")
        [connection] = self.factory.connections
        pings = []
        answer = client.onPing

        def onPing(payload: bytes) -> None:
            if not pings:
                # The ping's timeout runs on the server; its pong is not read yet.
                connection.pauseReading()
                connection.pauseReading()
            pings.append(payload)
            answer(payload)

        client.onPing = onPing
        await waitFor(lambda: pings, what="the first ping")
        client.sendMessage(b"{}")
        await noFrameWithin(client, 3.0)  # three ping intervals, past the first ping's timeout
        self.assertTrue(connection.isOpen)
        self.assertEqual(len(pings), 1)
        self.assertEqual(connection.autoPongs, 0)
        connection.resumeReading()
        connection.resumeReading()
        self.assertEqual(await nextJSON(client), {"Error": "refused", "Id": 1})
        await waitFor(lambda: connection.autoPongs, timeout=5, what="a ping answered after the resume")
        self.assertEqual(len(pings), 2)
        self.assertTrue(connection.isOpen)

    async def test_deadPeerStillDropped(self) -> None:
        """
        A peer that stops reading (and so answering pings) while the server reads
        it is dropped by the ping timeout, as before.
        """
        client = await self.clients.connect(self.port, "/errors")
        [connection] = self.factory.connections
        client.transport.pauseProducing()
        await waitFor(lambda: connection.state == connection.STATE_CLOSED, timeout=6, what="the dead peer dropped")
        self.assertIn("ping timeout", connection.wasNotCleanReason)
        await abortBoth(client, connection)


class OriginTests(TestCase):
    """
    (#11, item 3) Browsers send the page's Origin with a WebSocket handshake: only
    the daemon's own origin and those given with --allowed-origins may connect;
    clients that send none (not browsers) are unaffected.
    """

    timeout = 20

    def setUp(self) -> None:
        self.factory = StageServerFactory({"/x": EndpointHandler}, makeAuthenticator(None, reactor), Limits(), reactor)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)

    async def status(self, origin: str | None) -> int:
        headers = {} if origin is None else {"Origin": origin}
        try:
            client = await self.clients.connect(self.port, "/x", headers=headers)
        except HandshakeFailed as e:
            return e.status or 0
        client.sendClose(1000)
        await client.closed
        return 101

    async def test_ownAndNone(self) -> None:
        """
        The daemon's own origin (the host the browser connected to) and no Origin
        at all are accepted.
        """
        self.assertEqual(await self.status(f"https://localhost:{self.port}"), 101)
        self.assertEqual(await self.status(None), 101)

    async def test_foreignRefused(self) -> None:
        """
        Another site's page, a look-alike of ours on another port or scheme-less,
        and C{null} (sandboxed and file pages) get 403, and the refusal is logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for origin in ("https://evil.example", f"https://localhost:{self.port + 1}", "null",
                       f"https://localhost.evil.example:{self.port}", f"http://localhost:{self.port + 1}"):
            self.assertEqual(await self.status(origin), 403, origin)
        self.assertEqual(len([e for e in events if "is not allowed" in e.get("log_format", "")]), 5)

    async def test_allowedOrigins(self) -> None:
        """
        Origins listed by --allowed-origins are accepted, C{null} too when listed;
        the comparison ignores case, as browsers send lower case anyway.
        """
        self.factory.permittedOrigins = frozenset({"https://app.example.org", "null"})
        self.assertEqual(await self.status("https://APP.example.org"), 101)
        self.assertEqual(await self.status("null"), 101)
        self.assertEqual(await self.status("https://other.example.org"), 403)

    async def test_serverHeaderHidesVersion(self) -> None:
        """
        The handshake's answer names wsqueue, not Autobahn and its version.
        """
        client = await self.clients.connect(self.port, "/x")
        self.assertEqual(client.http_headers.get("server"), "wsqueue")
