"""
What every server shares (L{wsqueue.server}) and the link's shutdown: errors stay
inside the connection, and stopping closes WebSockets with 1001.
"""

from __future__ import annotations

import socket

from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from wsqueue.auth import basicHeader, makeAuthenticator
from wsqueue.link import HandshakeFailed, LinkOwner
from wsqueue.server import (
    ConnectionCloser,
    EndpointHandler,
    Limits,
    StageServerFactory,
    StageServerProtocol,
    unsentBytes,
)

from .helpers import Clients, listenTLS, nextJSON, rawRequest, upgradeRequest, waitFor
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


class NoDelayTests(TestCase):
    timeout = 20

    async def test_serverAndLinkSocketsNoDelay(self) -> None:
        """
        Server connections and links send small frames at once (TCP_NODELAY), so a
        frame never waits for the peer's delayed acknowledgement.
        """
        queue = StandInQueue(self)
        link = startLink(self, queue.listen(), "/popmsg", _Owner())
        await waitFor(lambda: queue.poppers and link.protocol, what="the link open on both ends")
        for transport in (queue.poppers[0].connection.transport, link.protocol.transport):
            tcp = transport.transport  # under TLS
            self.assertTrue(tcp.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class UnsentBytesTests(TestCase):
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
