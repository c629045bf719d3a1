# -*- test-case-name: tests.test_testing -*-
"""
Test wsqueue's stages in memory, without sockets, TLS or the global reactor, as
C{treq.testing} lets one test code that uses treq.

Two kinds of help:

  - B{Fakes} for a stage's logic on its own: L{RecordingLink} (a stage's open link
    to msgqueue), L{RecordingSender} (a sender under flow control),
    L{RecordingPublishClient} (a client of the publisher's
    L{wsqueue.publisher.Forwarder}), L{RecordingSubscriber} (a client of the
    subscriber's L{wsqueue.subscriber.QueueReader}), L{AcceptingAuthenticator} and
    L{MemoryServerTransport} (a server protocol driven by hand).
  - B{An in-memory network} joining real stages: L{MemoryNetwork} connects a client
    factory to a server factory through in-memory transports and moves the bytes
    when asked (L{MemoryNetwork.flush}); L{MemoryEndpoint} is a client endpoint on
    it, so a real L{wsqueue.link.QueueLink} connects, loses its connection and
    reconnects through it; L{MemoryPipeline} builds msgqueue on a memory store and
    links publishers and subscribers to it, and connects end clients
    (L{MemoryClient}) to any stage.  Everything real runs: the WebSocket opening and
    closing handshakes, Basic authentication, framing, the stages' flow and
    acknowledgements, the links' retry policy.  Only the sockets and TLS are gone.

Time is a L{MemoryReactorClock}: nothing happens until the test pumps the network
or advances the clock (L{MemoryNetwork.advance} does both, in step).  Autobahn runs
its timers (handshake and close timeouts, pings) on txaio's loop, whatever reactor
its factories are given: a L{MemoryNetwork} points C{txaio.config.loop} at its clock
while it exists and puts the previous loop back in L{MemoryNetwork.restore} (a
context manager exit, or the cleanup registered for a test case), so that no timer
reaches the global reactor (trial's C{DirtyReactorAggregateError}).  Create the
network I{before} the factories, and use one network at a time.

The transports are L{twisted.test.iosim.FakeTransport}s, and each connection an
L{twisted.test.iosim.IOPump}: C{twisted/test/iosim.py} is installed with every
Twisted wheel (C{treq.testing} builds on it too), though it lives in Twisted's test
package and is not covered by Twisted's deprecation policy.  Only its public
attributes are used here (C{stream}, C{disconnecting}, C{disconnected},
C{disconnectReason}, C{getOutBuffer}, C{bufferReceived}, C{reportDisconnect}).

Example::

    pipeline = MemoryPipeline(self)   # cleaned up when the test ends
    publisher = pipeline.addPublisher()
    client = pipeline.connectClient(publisher.factory, "/publish")
    client.sendJSON({"Topic": "news", "Content": "hi", "Id": 1})
    pipeline.flush()
    self.assertEqual(client.receivedJSON(), [{"Ack": 1}])
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test import iosim
from zope.interface import implementer

from wsqueue import wire
from wsqueue.auth import DEMO_PASSWORD, DEMO_USER, basicHeader, makeAuthenticator
from wsqueue.broker import QueueBroker
from wsqueue.connection import Limits
from wsqueue.link import ClientConnection, QueueLink
from wsqueue.msgqueue import makeMsgQueueFactory
from wsqueue.publisher import BATCH_BYTES, Forwarder, makePublisherFactory
from wsqueue.server import StageServerFactory
from wsqueue.store.base import IMessageStore
from wsqueue.store.memory import MemoryStore
from wsqueue.subscriber import DEFAULT_MAX_CLIENT_BUFFER, QueueReader, TopicRegistry, makeSubscriberFactory

__all__ = [
    "QUEUE_URL",
    "AcceptingAuthenticator",
    "MemoryClient",
    "MemoryConnection",
    "MemoryEndpoint",
    "MemoryNetwork",
    "MemoryPipeline",
    "MemoryServerTransport",
    "MemoryTransport",
    "PublisherStage",
    "RecordingLink",
    "RecordingPublishClient",
    "RecordingSubscriber",
    "SubscriberStage",
    "serverFrames",
]

QUEUE_URL = "ws://msgqueue.invalid:8080"
"""The URL the links of a L{MemoryPipeline} dial (only its path and Host header matter)."""

MAX_FLUSH_ROUNDS = 100_000
"""L{MemoryNetwork.flush} gives up after this many rounds: two peers that never stop
talking are a bug to report, not a test to hang."""


# --- Fakes ------------------------------------------------------------------------------


class RecordingLink:
    """
    Stands in for a stage's open link to msgqueue (a L{wsqueue.link.LinkProtocol}),
    as the publisher's forwarder and the subscriber's reader use it: records every
    frame sent while it is open.

    @ivar isOpen: whether frames are taken; set it to L{False} to close the link.
    @ivar sent: the frames sent, in order.
    """

    def __init__(self, isOpen: bool = True) -> None:
        self.isOpen = isOpen
        self.sent: list[bytes] = []

    def send(self, payload: bytes) -> bool:
        """
        Record C{payload} if the link is open; say whether it was sent.
        """
        if not self.isOpen:
            return False
        self.sent.append(payload)
        return True

    def sentJSON(self) -> list[Any]:
        """
        The frames sent, decoded from JSON.
        """
        return [json.loads(payload) for payload in self.sent]


class RecordingSender:
    """
    Stands in for a sender under flow control (a C{/pushmsg} connection of msgqueue,
    any L{wsqueue.flow.Pausable}): records each pause and resume.

    @ivar calls: C{"pause"} and C{"resume"}, in order.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")


class RecordingPublishClient:
    """
    Stands in for a publishing connection (a L{wsqueue.publisher.PublishHandler}) as
    the forwarder sees it: records acknowledgements, refusals and pauses (flow
    control: C{pauseProducing}/C{resumeProducing}).

    @ivar acks: the client Ids acknowledged, in order.
    @ivar errors: the L{wire.WireError}s the client was refused with, in order.
    @ivar paused: whether the forwarder has paused the client (flow control).
    """

    def __init__(self) -> None:
        self.acks: list[wire.JSONId] = []
        self.errors: list[wire.WireError] = []
        self.paused = False

    def acknowledge(self, clientId: wire.JSONId) -> None:
        self.acks.append(clientId)

    def refuse(self, error: wire.WireError) -> None:
        self.errors.append(error)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


def serverFrames(data: bytes) -> list[bytes]:
    """
    The payloads of complete, unmasked WebSocket frames (what a server writes), in
    order.  Lengths of every size (7-bit, 16-bit and 64-bit) are read.
    """
    payloads: list[bytes] = []
    position = 0
    while position < len(data):
        length = data[position + 1] & 0x7F
        position += 2
        if length == 126:
            length = int.from_bytes(data[position : position + 2], "big")
            position += 2
        elif length == 127:
            length = int.from_bytes(data[position : position + 8], "big")
            position += 8
        payloads.append(data[position : position + length])
        position += length
    return payloads


class RecordingSubscriber:
    """
    Stands in for a subscribed client (a L{wsqueue.subscriber.SubscribeHandler}) as
    the subscriber's reader sees it: decodes the frames written to it.

    @ivar received: C{(offset, message)} for each delivery, in order.
    """

    def __init__(self) -> None:
        self.received: list[tuple[int, dict[str, Any]]] = []

    def sendFrames(self, data: bytes) -> None:
        for payload in serverFrames(data):
            message = json.loads(payload)
            self.received.append((message["Offset"], message))

    @property
    def offsets(self) -> list[int]:
        return [offset for offset, _ in self.received]


class AcceptingAuthenticator:
    """
    An authenticator that accepts anyone as C{tester}, for protocol tests in memory
    that are not about authentication.
    """

    def authenticate(self, header: str | None, address: str = "") -> Deferred[str]:
        return succeed("tester")


class MemoryServerTransport(StringTransport):
    """
    An in-memory transport for a server protocol driven by hand (bytes in with
    C{dataReceived}, out with C{value()}).  Autobahn unregisters a producer when it
    fails a connection, registered or not; L{StringTransport} would raise.
    """

    def unregisterProducer(self) -> None:
        self.producer = None


# --- The in-memory network ---------------------------------------------------------------


class MemoryTransport(iosim.FakeTransport):
    """
    One end of an in-memory connection.  Unlike L{iosim.FakeTransport}, it honours
    C{pauseProducing}: while it is paused, its protocol is not given what its peer
    sends (the bytes wait, as in the kernel's buffers), so flow control can be tested.
    """

    readingPaused = False

    def pauseProducing(self) -> None:
        self.readingPaused = True

    def resumeProducing(self) -> None:
        self.readingPaused = False


class MemoryConnection(iosim.IOPump):
    """
    An in-memory connection between a client and a server protocol, moved on by
    L{pump} (L{MemoryNetwork} pumps all its connections together).
    """

    clientIO: MemoryTransport
    serverIO: MemoryTransport

    @property
    def finished(self) -> bool:
        """
        Whether both ends have been told the connection is lost.
        """
        return bool(self.clientIO.disconnected and self.serverIO.disconnected)

    def pump(self, debug: bool = False, advanceClock: bool = True) -> bool:
        """
        Move what each end wrote to the other, unless the other has paused reading;
        report a closed connection once nothing is left in flight.  Say whether
        anything happened.
        """
        if not (self.clientIO.readingPaused or self.serverIO.readingPaused):
            return bool(super().pump(debug, advanceClock))
        if advanceClock:
            self.clock.advance(0)
        moved = False
        for writer, reader in ((self.serverIO, self.clientIO), (self.clientIO, self.serverIO)):
            if not reader.readingPaused:
                data = writer.getOutBuffer()
                if data:
                    reader.bufferReceived(data)
                    moved = True
        return moved

    def cut(self, why: str = "cut by the test") -> None:
        """
        Lose the connection at both ends at once, as a crash or a broken network
        would: whatever was in flight is lost, and no closing handshake happens.
        """
        ends = (self.clientIO, self.serverIO)
        for end in ends:
            end.stream = []
            # iosim types the attribute by its default, a clean ConnectionDone.
            end.disconnectReason = ConnectionLost(why)  # type: ignore[assignment]
            end.disconnecting = True
        for end in ends:
            if not end.disconnected:
                end.disconnected = True
                end.reportDisconnect()


class MemoryNetwork:
    """
    In-memory connections between client and server factories, and the clock they
    and Autobahn's timers run on.

    While a network exists, C{txaio.config.loop} is its clock; L{restore} (or the
    end of a C{with} block, or of the test case given to L{forTest}) puts the
    previous loop back.

    @ivar clock: the time of everything on this network.
    @ivar connections: the connections not yet closed at both ends.
    """

    def __init__(self, clock: MemoryReactorClock | None = None) -> None:
        self.clock = clock if clock is not None else MemoryReactorClock()
        self.connections: list[MemoryConnection] = []
        self._clientPorts = itertools.count(40_000)
        # txaio binds config at import (txaio._use_framework), out of mypy's sight.
        self._config = txaio.config  # type: ignore[attr-defined]
        self._previousLoop = self._config.loop
        self._config.loop = self.clock
        self._restored = False

    @classmethod
    def forTest(cls, testCase: Any, clock: MemoryReactorClock | None = None) -> MemoryNetwork:
        """
        A network whose txaio loop is restored when C{testCase} (a trial
        C{TestCase} or C{SynchronousTestCase}) ends.
        """
        network = cls(clock)
        testCase.addCleanup(network.restore)
        return network

    def restore(self) -> None:
        """
        Give txaio its previous loop back (once; later calls do nothing).
        """
        if not self._restored:
            self._restored = True
            self._config.loop = self._previousLoop

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def connect(
        self, serverFactory: IProtocolFactory, clientFactory: IProtocolFactory, serverAddress: IPv4Address | None = None
    ) -> MemoryConnection:
        """
        Connect a new protocol of C{clientFactory} to a new one of C{serverFactory};
        both are told the connection is made.  Nothing moves until L{flush}.
        """
        clientAddress = IPv4Address("TCP", "127.0.0.1", next(self._clientPorts))
        if serverAddress is None:
            serverAddress = IPv4Address("TCP", "127.0.0.1", 443)
        client = _built(clientFactory, serverAddress)
        server = _built(serverFactory, clientAddress)
        clientIO = MemoryTransport(client, isServer=False, hostAddress=clientAddress, peerAddress=serverAddress)
        serverIO = MemoryTransport(server, isServer=True, hostAddress=serverAddress, peerAddress=clientAddress)
        server.makeConnection(serverIO)
        client.makeConnection(clientIO)
        connection = MemoryConnection(client, server, clientIO, serverIO, False, clock=self.clock)
        self.connections.append(connection)
        return connection

    def pump(self) -> bool:
        """
        Run what is due now, then move each connection's bytes one step; say whether
        anything moved or fell due meanwhile.
        """
        self.clock.advance(0)
        moved = False
        for connection in list(self.connections):
            if connection.pump(advanceClock=False):
                moved = True
            if connection.finished:
                self.connections.remove(connection)
        return moved or self._due()

    def _due(self) -> bool:
        now = self.clock.seconds()
        return any(call.getTime() <= now for call in self.clock.getDelayedCalls())

    def flush(self) -> bool:
        """
        Pump until the network is quiet: no bytes in flight (except to a paused
        reader), nothing due on the clock.  Say whether anything happened.
        """
        for rounds in range(MAX_FLUSH_ROUNDS):
            if not self.pump():
                return rounds > 0
        raise AssertionError(f"the in-memory network was still busy after {MAX_FLUSH_ROUNDS} rounds")

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, stopping at each delayed call on the way and flushing
        after it, as a real reactor would let the network run between timers.
        """
        target = self.clock.seconds() + seconds
        self.flush()
        while True:
            due = [call.getTime() for call in self.clock.getDelayedCalls() if call.getTime() <= target]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
            self.flush()
        self.clock.advance(max(0.0, target - self.clock.seconds()))
        self.flush()


def _built(factory: IProtocolFactory, address: IPv4Address) -> IProtocol:
    protocol = factory.buildProtocol(address)
    if protocol is None:
        raise ValueError(f"{factory!r} refused to build a protocol")
    return protocol


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    A client endpoint that connects to C{serverFactory} over a L{MemoryNetwork}: give
    it to a L{QueueLink} (or any L{ClientService}) in place of a TLS endpoint.

    @ivar refusing: while true, connection attempts fail with
        L{ConnectionRefusedError}, as if nothing listened (the server is down).
    @ivar attempts: how many connections were asked for.
    @ivar connections: every connection made, open or not.
    """

    def __init__(
        self, network: MemoryNetwork, serverFactory: IProtocolFactory, address: IPv4Address | None = None
    ) -> None:
        self.network = network
        self.serverFactory = serverFactory
        self.address = address
        self.refusing = False
        self.attempts = 0
        self.connections: list[MemoryConnection] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        self.attempts += 1
        if self.refusing:
            return fail(ConnectionRefusedError("refused by the test"))
        connection = self.network.connect(self.serverFactory, protocolFactory, self.address)
        self.connections.append(connection)
        return succeed(connection.client)

    def cutAll(self, why: str = "cut by the test") -> None:
        """
        Cut every open connection made through this endpoint (see L{MemoryConnection.cut}).
        """
        for connection in self.connections:
            if not connection.finished:
                connection.cut(why)


# --- Stages joined in memory -------------------------------------------------------------


class MemoryClient(ClientConnection):
    """
    An end client (a publishing or subscribing WebSocket client) in memory: the
    client connection the links and C{wsqueue-client} use (L{ClientConnection}),
    recording what it receives, with helpers to send and read JSON without waiting.

    @ivar opened: fires with the client once the WebSocket is open, or fails with
        L{HandshakeFailed} (with the HTTP status, if the server answered).
    @ivar closed: fires with C{(code, reason)} once the connection is gone.
    @ivar received: the messages received and not yet taken by L{receivedJSON}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    def frameReceived(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(payload)

    def sendJSON(self, message: object) -> None:
        """
        Send C{message} as one JSON text frame.
        """
        self.sendMessage(json.dumps(message).encode("utf-8"))

    def receivedJSON(self) -> list[Any]:
        """
        Take every message received since the last call, decoded from JSON.
        """
        received, self.received = self.received, []
        return [json.loads(payload) for payload in received]


@dataclass
class PublisherStage:
    """
    A publisher linked to a L{MemoryPipeline}'s msgqueue; clients connect to C{factory}
    on C{/publish}.
    """

    forwarder: Forwarder
    factory: StageServerFactory
    link: QueueLink


@dataclass
class SubscriberStage:
    """
    A subscriber linked to a L{MemoryPipeline}'s msgqueue; clients connect to C{factory}
    on C{/subscribe}.
    """

    reader: QueueReader
    factory: StageServerFactory
    link: QueueLink

    @property
    def registry(self) -> TopicRegistry:
        return self.reader.registry


class MemoryPipeline:
    """
    msgqueue on a store (a L{MemoryStore} by default), with publishers and
    subscribers linked to it and end clients connected to them, all on one
    L{MemoryNetwork}, wired as the daemons wire them (L{wsqueue.tap}).

    Every stage accepts the demo account (L{DEMO_USER}) through real Basic
    authentication, and the links use it.

    Give it the test case (it calls L{stop} when the test ends), or use it as a
    context manager, or call L{stop}: that also gives txaio its loop back.

    @ivar msgqueue: msgqueue's server factory.
    @ivar msgqueueEndpoint: where the links connect: set C{refusing} on it to take
        msgqueue away, call C{cutAll} to drop every link at once.
    @ivar retryDelay: seconds a link waits before each new attempt (no backoff, no
        jitter: tests advance the clock by exactly this).
    """

    def __init__(
        self,
        testCase: Any = None,
        clock: MemoryReactorClock | None = None,
        store: IMessageStore | None = None,
        limits: Limits | None = None,
        retryDelay: float = 1.0,
    ) -> None:
        self.network = MemoryNetwork(clock)
        self.clock = self.network.clock
        self.limits = limits = limits if limits is not None else Limits()
        self.retryDelay = retryDelay
        self.store = store if store is not None else MemoryStore(now=self.clock.seconds)
        self.broker = QueueBroker(self.store, self.clock)
        self.authenticator = makeAuthenticator(None, self.clock)
        self.msgqueue = makeMsgQueueFactory(self.broker, self.authenticator, limits, self.clock)
        self.msgqueueEndpoint = MemoryEndpoint(self.network, self.msgqueue, IPv4Address("TCP", "127.0.0.1", 8080))
        self.publishers: list[PublisherStage] = []
        self.subscribers: list[SubscriberStage] = []
        self._stopped = False
        if testCase is not None:
            testCase.addCleanup(self.stop)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def flush(self) -> bool:
        """See L{MemoryNetwork.flush}."""
        return self.network.flush()

    def advance(self, seconds: float) -> None:
        """See L{MemoryNetwork.advance}."""
        self.network.advance(seconds)

    def addPublisher(self, maxBuffered: int = 10_000) -> PublisherStage:
        """
        A publisher whose link to msgqueue is started and, if msgqueue is reachable, open.
        """
        forwarder = Forwarder(
            self.clock, maxBuffered=maxBuffered, batchBytes=min(BATCH_BYTES, self.limits.maxMessageSize),
            pauseLimit=self.limits.pingInterval / 2,
        )
        factory = makePublisherFactory(forwarder, self.authenticator, self.limits, self.clock)
        link = self._startLink(f"/pushmsg?producer={forwarder.producerName}", forwarder)
        stage = PublisherStage(forwarder, factory, link)
        self.publishers.append(stage)
        return stage

    def addSubscriber(
        self, group: str = "subscribers", batch: bool = True, maxClientBuffer: int = DEFAULT_MAX_CLIENT_BUFFER
    ) -> SubscriberStage:
        """
        A subscriber reading msgqueue as one consumer of C{group} (explicit acks, as
        the daemon reads), its link started and, if msgqueue is reachable, open.
        """
        reader = QueueReader(TopicRegistry(), self.clock)
        factory = makeSubscriberFactory(reader, self.authenticator, self.limits, self.clock, maxClientBuffer)
        path = f"/popmsg?group={quote(group, safe='')}&ack=explicit" + ("&batch=1" if batch else "")
        link = self._startLink(path, reader)
        stage = SubscriberStage(reader, factory, link)
        self.subscribers.append(stage)
        return stage

    def _startLink(self, path: str, owner: Forwarder | QueueReader) -> QueueLink:
        link = QueueLink(
            self.clock, self.msgqueueEndpoint, QUEUE_URL + path, DEMO_USER, DEMO_PASSWORD, owner, self.limits,
            retryPolicy=lambda attempt: self.retryDelay,
        )
        link.startService()
        self.flush()
        return link

    def connectClient(
        self,
        factory: StageServerFactory,
        path: str,
        credentials: tuple[str, str] | None = (DEMO_USER, DEMO_PASSWORD),
    ) -> MemoryClient:
        """
        Connect an end client to a stage's C{factory} on C{path} and run the opening
        handshake.  C{credentials} are sent as Basic auth (L{None}: no
        C{Authorization} header).  The client's C{opened} tells how the handshake
        ended: a refusal fails it with L{wsqueue.client.ConnectFailed}, which the
        test must consume (C{failureResultOf}).
        """
        headers = {} if credentials is None else {"Authorization": basicHeader(*credentials)}
        clientFactory = WebSocketClientFactory(f"ws://stage.invalid{path}", headers=headers, reactor=self.clock)
        clientFactory.protocol = MemoryClient
        clientFactory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2, maxMessagePayloadSize=0)
        connection = self.network.connect(factory, clientFactory)
        self.flush()
        client = connection.client
        assert isinstance(client, MemoryClient)
        return client

    def stop(self) -> None:
        """
        Stop everything as the daemons stop: publishers refuse new messages, links
        close with 1001, every stage closes its clients with 1001, msgqueue's broker
        stops; then give txaio its loop back.  Called when the test case given at
        creation ends; later calls do nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            for publisher in self.publishers:
                publisher.forwarder.drain()
            for stage in self._stages():
                stage.link.stopService()
            for factory in self._servers():
                factory.closeAll()
            self.flush()
            self.broker.stop()
        finally:
            self.network.restore()

    def _servers(self) -> Iterator[StageServerFactory]:
        yield self.msgqueue
        for stage in self._stages():
            yield stage.factory

    def _stages(self) -> list[PublisherStage | SubscriberStage]:
        return [*self.publishers, *self.subscribers]

