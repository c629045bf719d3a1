# -*- test-case-name: tests.test_subscriber -*-
"""
The subscriber stage: clients subscribe to topics on C{/subscribe}; a L{QueueReader}
reads msgqueue as one consumer of the daemon's group and fans each message out.

Each message is framed once for all its receivers, and each client's share of a
batch from msgqueue goes out in one write (a topic's frames are joined once for all
its clients); nothing waits for any client, so a slow one does not hold up the
others.  The reader acknowledges offsets to msgqueue once it has handed a message to
its clients' connections, and drops an offset it has recently handled (a redelivery
after a reconnect), so clients see each message once; a new store epoch starts over.

The frames from and to msgqueue (deliveries, acknowledgements) are encoded and parsed
in L{wsqueue.wire}, which documents each one ("Between the stages").
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from autobahn.websocket.types import ConnectionRequest
from twisted.logger import Logger

from wsqueue import frames, wire
from wsqueue.acl import ACL
from wsqueue.auth import BasicAuthenticator
from wsqueue.coalesce import CoalescedCall
from wsqueue.connection import Limits
from wsqueue.link import LinkOwner, LinkProtocol
from wsqueue.server import EndpointHandler, StageServerFactory, StageServerProtocol
from wsqueue.topics import TopicTrie, isPattern

MAX_SUBSCRIPTIONS_PER_CLIENT = 10_000
NOT_ALLOWED = "not allowed"
"""The Error for what the ACL (C{--acl}) does not allow the user."""
DEFAULT_MAX_CLIENT_BUFFER = 1024 * 1024
ACK_EVERY = 100
ACK_DELAY = 0.02
"""The reader acknowledges after this many messages or this many seconds, whichever comes first."""
RECENT_OFFSETS = 100_000
"""How many handled offsets are remembered to recognise a redelivery (well above
msgqueue's window of unacknowledged messages per consumer)."""


MATCHES_REMEMBERED = 10_000
"""Topics whose matching clients the registry remembers while wildcard
subscriptions exist (forgotten at once when any wildcard subscription changes)."""

_NOBODY: frozenset = frozenset()


class TopicRegistry:
    """
    Which clients are subscribed to which topic or pattern (C{news.*}, C{news.>};
    see L{wsqueue.topics}).

    Exact topics are a dictionary look-up, as before wildcards.  Patterns live in
    a L{TopicTrie}; what a topic's message goes to (its exact subscribers and
    every matching pattern's, each client once) is remembered per topic until a
    wildcard subscription changes, so a stream of messages costs one look-up each.
    """

    def __init__(self) -> None:
        self._byTopic: dict[str, set[SubscribeHandler]] = {}
        self._patterns: TopicTrie[SubscribeHandler] = TopicTrie()
        self._matches: dict[str, set[SubscribeHandler] | frozenset[SubscribeHandler]] = {}
        self.slowConsumersClosed = 0

    def subscribe(self, topic: str, client: SubscribeHandler) -> None:
        if isPattern(topic):
            self._patterns.add(topic, client)
            self._matches.clear()
        else:
            self._byTopic.setdefault(topic, set()).add(client)
            self._matches.pop(topic, None)

    def unsubscribe(self, topic: str, client: SubscribeHandler) -> None:
        if isPattern(topic):
            self._patterns.discard(topic, client)
            self._matches.clear()
            return
        clients = self._byTopic.get(topic)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._byTopic[topic]
            self._matches.pop(topic, None)

    def subscribers(self, topic: str) -> set[SubscribeHandler] | frozenset[SubscribeHandler]:
        """
        The clients a message on C{topic} goes to, each once however many of its
        subscriptions match.  Not to be changed by the caller.
        """
        if not self._patterns:
            return self._byTopic.get(topic, _NOBODY)
        found = self._matches.get(topic)
        if found is None:
            found = self._patterns.match(topic)
            exact = self._byTopic.get(topic)
            if exact:
                found |= exact
            if len(self._matches) >= MATCHES_REMEMBERED:
                self._matches.clear()
            self._matches[topic] = found
        return found

    @property
    def topics(self) -> int:
        """
        How many exact topics have subscribers.
        """
        return len(self._byTopic)

    @property
    def patterns(self) -> int:
        """
        How many (pattern, client) wildcard subscriptions there are.
        """
        return len(self._patterns)


class QueueReader(LinkOwner):
    """
    Reads msgqueue (the link's owner) and delivers each message to its topic's clients.
    """

    log = Logger()

    def __init__(self, registry: TopicRegistry, clock) -> None:
        self.registry = registry
        self.clock = clock
        self.epoch: str | None = None
        self._recent: set[int] = set()
        self._recentOrder: deque[int] = deque()
        self._ackCall = CoalescedCall(clock, self._sendAck)
        self._toAck: int | None = None
        self._unacked = 0
        self.stopping = False
        self.ignoredWhileStopping = 0

    def linkOpened(self, link: LinkProtocol) -> None:
        super().linkOpened(link)
        self._toAck = None
        self._unacked = 0

    def linkClosed(self, link: LinkProtocol) -> None:
        super().linkClosed(link)
        # What was not acknowledged comes again on the next link (and is dropped as
        # recently handled).
        self._ackCall.cancel()

    def linkStopping(self, link: LinkProtocol) -> None:
        # Acknowledge what was handed to clients, so that it is not delivered again
        # through another subscriber of the group; from now on nothing more is
        # handed out or acknowledged: msgqueue gives what still arrives to the next
        # consumer of the group once the link has closed.
        self.stopping = True
        if self._ackCall.pending:
            self._ackCall.cancel()
            self._sendAck()

    def linkReceived(self, link: LinkProtocol, payload: bytes, isBinary: bool) -> None:
        if self.stopping:
            if not self.ignoredWhileStopping:
                self.log.info("stopping: leaving what msgqueue still sends unacknowledged, for the group's next reader")
            self.ignoredWhileStopping += 1
            return
        frame = wire.parseDeliveries(payload, isBinary)
        if isinstance(frame, wire.WireError):
            self.unexpectedFrame(payload)
            return
        epoch, batch = frame.epoch, frame.messages
        self._checkEpoch(epoch)
        subscribers = self.registry.subscribers
        recent, recentOrder = self._recent, self._recentOrder
        outgoing: list[tuple[str, bytes]] = []
        for offset, topic, content in batch:
            if offset not in recent:
                recent.add(offset)
                recentOrder.append(offset)
                if subscribers(topic):
                    outgoing.append((topic, frames.textFrame(wire.delivery(topic, content, offset, epoch))))
        self._forgetOldest()
        if batch:
            self._toAck = batch[-1][0]
        self._unacked += len(batch)
        if outgoing:
            self._fanOut(outgoing)
        self._scheduleAck()

    def _fanOut(self, outgoing: list[tuple[str, bytes]]) -> None:
        """
        Write framed messages (with their topics, in queue order) to every client
        subscribed to them: one write per client, and a topic's frames joined once
        for all the clients that have no other topic in this batch.
        """
        byTopic: dict[str, list[bytes]] = {}
        for topic, frame in outgoing:
            byTopic.setdefault(topic, []).append(frame)
        topicsOf: dict[SubscribeHandler, list[str]] = {}
        for topic in byTopic:
            for client in self.registry.subscribers(topic):
                topicsOf.setdefault(client, []).append(topic)
        joined: dict[str, bytes] = {}
        for client, topics in topicsOf.items():
            if len(topics) == 1:
                data = joined.get(topics[0])
                if data is None:
                    data = joined[topics[0]] = b"".join(byTopic[topics[0]])
            else:
                wanted = set(topics)
                data = b"".join(frame for topic, frame in outgoing if topic in wanted)
            client.sendFrames(data)

    def _checkEpoch(self, epoch: str) -> None:
        if epoch != self.epoch:
            if self.epoch is not None:
                self.log.warn("msgqueue's store has a new epoch {epoch}: counting offsets from the start", epoch=epoch)
            self.epoch = epoch
            self._recent.clear()
            self._recentOrder.clear()

    def _forgetOldest(self) -> None:
        # Once per frame, not per message: the frame's offsets were remembered in
        # linkReceived's loop (this is the subscriber's per-message path).
        while len(self._recentOrder) > RECENT_OFFSETS:
            self._recent.discard(self._recentOrder.popleft())

    def _scheduleAck(self) -> None:
        # One ack per ACK_EVERY messages at most, and none later than ACK_DELAY after
        # a message: a trickle costs msgqueue one store transaction per ack, while a
        # stream never waits on its window of unacknowledged messages.
        self._ackCall.schedule(0 if self._unacked >= ACK_EVERY else ACK_DELAY)

    def _sendAck(self) -> None:
        # Acknowledges this offset and everything msgqueue delivered before it.
        if self._link is not None and self._toAck is not None and self._link.send(wire.ack(self._toAck)):
            self._toAck = None
            self._unacked = 0


class SubscribeHandler(EndpointHandler):
    """
    A client on C{/subscribe}.

    A client with more than C{maxClientBuffer} bytes waiting for it beyond what the
    socket's buffers hold is closed with 1008 ("slow consumer") instead of holding
    memory without bound or slowing the others: the connection's own bound on
    everything queued for its peer (L{StageServerProtocol}), set to that figure.
    Only bytes still waiting count: a client that reads slowly but keeps up within
    the bound stays.
    """

    def __init__(
        self, connection: StageServerProtocol, request: ConnectionRequest, registry: TopicRegistry, maxClientBuffer: int
    ) -> None:
        super().__init__(connection, request)
        self.registry = registry
        self.maxClientBuffer = maxClientBuffer
        connection.peerBufferLimit = maxClientBuffer
        self.topics: set[str] = set()
        self.aclFile = connection.factory.acl
        self.user = connection.user or ""

    def received(self, payload: bytes, isBinary: bool) -> None:
        request = wire.parseSubscribe(payload, isBinary)
        if isinstance(request, wire.WireError):
            self.connection.sendError(request)
            return
        if request.subscribe:
            if self.aclFile is not None and not self.aclFile.acl.maySubscribe(self.user, request.topic):
                self.connection.sendError(wire.WireError(NOT_ALLOWED, request.id, request.hasId))
                return
            if request.topic not in self.topics and len(self.topics) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
                self.connection.sendError(
                    wire.WireError(f"at most {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions per connection", request.id, request.hasId)
                )
                return
            self.topics.add(request.topic)
            self.registry.subscribe(request.topic, self)
        else:
            self.topics.discard(request.topic)
            self.registry.unsubscribe(request.topic, self)
        if request.hasId:
            self.connection.send(wire.ack(request.id))

    def closed(self) -> None:
        self._forget()

    def aclChanged(self, acl: ACL) -> None:
        """
        End the subscriptions the new ACL no longer allows, each with an Error
        frame naming it (C{{"Error": "not allowed", "Topic": t}}).
        """
        for topic in sorted(self.topics):
            if not acl.maySubscribe(self.user, topic):
                self.topics.discard(topic)
                self.registry.unsubscribe(topic, self)
                self.connection.send(wire.encode({"Error": NOT_ALLOWED, "Topic": topic}))

    def _forget(self) -> None:
        for topic in self.topics:
            self.registry.unsubscribe(topic, self)
        self.topics.clear()

    def sendFrames(self, data: bytes) -> None:
        """
        Write complete WebSocket frames (see L{frames.textFrame}) to the client; if
        that closes it as a slow consumer, it is counted and forgotten at once.
        """
        connection = self.connection
        if not connection.isOpen:
            return
        connection.sendFrames(data)
        if connection.slowConsumer:
            self.registry.slowConsumersClosed += 1
            self._forget()


def endForbiddenSubscriptions(factory: StageServerFactory, acl: ACL) -> None:
    """
    After the ACL changed: end, on every connection, the subscriptions it no
    longer allows.
    """
    for connection in list(factory.connections):
        handler = connection.handler
        if isinstance(handler, SubscribeHandler):
            handler.aclChanged(acl)


def makeSubscriberFactory(
    reader: QueueReader,
    authenticator: BasicAuthenticator,
    limits: Limits,
    reactor,
    maxClientBuffer: int = DEFAULT_MAX_CLIENT_BUFFER,
) -> StageServerFactory:
    """
    The WebSocket server factory of the subscriber.  C{--max-client-buffer} is also
    the bound on everything else queued for a client (Acks, Errors, pongs).
    """
    return StageServerFactory(
        {
            "/subscribe": lambda connection, request: SubscribeHandler(
                connection, request, reader.registry, maxClientBuffer
            )
        },
        authenticator,
        replace(limits, maxPeerBuffer=maxClientBuffer),
        reactor,
    )
