"""
Tests for L{wsqueue.connection}: the limits every connection gets, and what server
connections and links do the same way (L{wsqueue.connection.StageConnection}).
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue import broker
from wsqueue.auth import makeAuthenticator
from wsqueue.connection import DELIVERY_BURST, ENVELOPE_SLACK, MAX_PEER_BUFFER, Limits
from wsqueue.link import LinkOwner
from wsqueue.server import EndpointHandler, StageServerFactory

from .helpers import Clients, listenTLS, waitFor
from .standins import StandInQueue, startLink


class _Owner(LinkOwner):
    def linkReceived(self, link, payload, isBinary) -> None:
        pass


class LimitsTests(SynchronousTestCase):
    def test_maxPeerBufferDefault(self) -> None:
        """
        A peer may have 1 MiB waiting by default, as a subscriber's client may
        (C{--max-client-buffer}).
        """
        self.assertEqual(Limits().maxPeerBuffer, MAX_PEER_BUFFER)
        self.assertEqual(MAX_PEER_BUFFER, 1024 * 1024)

    def test_internalHoldsADeliveryBurst(self) -> None:
        """
        msgqueue's connections (internal limits) may hold a whole delivery burst on
        top of the bound: flow control pauses a consumer only after one.
        """
        internal = Limits(maxMessageSize=1000, maxPeerBuffer=5000).internal()
        self.assertEqual(internal.maxPeerBuffer, 5000 + DELIVERY_BURST * (1000 + ENVELOPE_SLACK))
        self.assertGreaterEqual(DELIVERY_BURST, broker.READ_BATCH)


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


class SendTests(TestCase):
    timeout = 20

    async def test_sendOnlyWhileOpen(self) -> None:
        """
        C{send} writes a frame on an open connection, on either side, and says so;
        on a closed one it drops the frame and says it did not send it (a stage
        that writes to a client that just left must not raise).
        """
        received: list[bytes] = []

        class Recording(EndpointHandler):
            def received(self, payload: bytes, isBinary: bool) -> None:
                received.append(payload)

        factory = StageServerFactory({"/x": Recording}, makeAuthenticator(None, reactor), Limits(), reactor)
        client = await Clients(self).connect(listenTLS(self, factory), "/x")
        [server] = factory.connections
        self.assertTrue(server.send(b'{"to": "client"}'))
        self.assertEqual(await client.frames.get(), b'{"to": "client"}')
        self.assertTrue(client.send(b'{"to": "server"}'))
        await waitFor(lambda: received == [b'{"to": "server"}'], what="the client's frame, masked, at the server")
        self.assertTrue(client.isOpen and server.isOpen)
        client.sendClose(1000)
        await client.closed
        await waitFor(lambda: not server.isOpen, what="the server side closed")
        self.assertEqual((server.send(b"late"), client.send(b"late")), (False, False))
