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

import itertools
from collections import deque
from dataclasses import replace

from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsqueue import frames, wire
from wsqueue._compat import unsentBytes
from wsqueue.acl import ACL
from wsqueue.auth import BasicAuthenticator
from wsqueue.coalesce import CoalescedCall
from wsqueue.connection import Limits
from wsqueue.link import LinkOwner, LinkProtocol
from wsqueue.server import EndpointHandler, StageServerFactory, StageServerProtocol
from wsqueue.topics import TopicTrie, isPattern, matches

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


class HistoryUnavailable(Exception):
    """
    msgqueue cannot be asked for history now (the link is down).
    """


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
        # len(self._patterns) > 0, kept as a plain attribute: read once per message.
        self._hasPatterns = False
        self.slowConsumersClosed = 0

    def subscribe(self, topic: str, client: SubscribeHandler) -> None:
        if isPattern(topic):
            self._patterns.add(topic, client)
            self._hasPatterns = True
            self._matches.clear()
        else:
            self._byTopic.setdefault(topic, set()).add(client)
            self._matches.pop(topic, None)

    def unsubscribe(self, topic: str, client: SubscribeHandler) -> None:
        if isPattern(topic):
            self._patterns.discard(topic, client)
            self._hasPatterns = len(self._patterns) > 0
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
        if not self._hasPatterns:
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
        self.lastOffset = 0
        """The highest offset handed out (in the current epoch)."""
        self.delivered = 0
        """Messages written to clients, one per client (for C{--metrics-port})."""
        self.holding: set[SubscribeHandler] = set()
        """Clients recovering history: their messages go through L{SubscribeHandler.hold}."""
        self._historyIds = itertools.count(1)
        self._historyWaiting: dict[int, Deferred[wire.HistoryReply]] = {}

    def requestHistory(self, topic: str, after: int) -> Deferred[wire.HistoryReply]:
        """
        Ask msgqueue for what it holds of C{topic} (or a pattern) above C{after};
        fail with L{HistoryUnavailable} when the link is down or goes down first.
        """
        if self._link is None or not self._link.isOpen:
            return fail(HistoryUnavailable("msgqueue is unreachable"))
        requestId = next(self._historyIds)
        d: Deferred[wire.HistoryReply] = Deferred()
        self._historyWaiting[requestId] = d
        self._link.send(wire.historyRequest(requestId, topic, after))
        return d

    def _historyReceived(self, payload: bytes) -> None:
        reply = wire.parseHistoryReply(payload)
        if isinstance(reply, wire.WireError):
            self.unexpectedFrame(payload)
            return
        d = self._historyWaiting.pop(reply.id, None)
        if d is not None:
            d.callback(reply)

    def linkOpened(self, link: LinkProtocol) -> None:
        super().linkOpened(link)
        self._toAck = None
        self._unacked = 0

    def linkClosed(self, link: LinkProtocol) -> None:
        super().linkClosed(link)
        waiting, self._historyWaiting = self._historyWaiting, {}
        for d in waiting.values():
            d.errback(HistoryUnavailable("the link to msgqueue was lost"))
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
        if payload.startswith(wire.HISTORY_PREFIX):
            self._historyReceived(payload)
            return
        frame = wire.parseDeliveries(payload, isBinary)
        if isinstance(frame, wire.WireError):
            self.unexpectedFrame(payload)
            return
        epoch, batch = frame.epoch, frame.messages
        self._checkEpoch(epoch)
        subscribers = self.registry.subscribers
        recent, recentOrder = self._recent, self._recentOrder
        outgoing: list[tuple[str, int, bytes]] = []
        for offset, topic, content in batch:
            if offset not in recent:
                recent.add(offset)
                recentOrder.append(offset)
                if subscribers(topic):
                    outgoing.append((topic, offset, frames.textFrame(wire.delivery(topic, content, offset, epoch))))
        self._forgetOldest()
        if batch:
            self._toAck = batch[-1][0]
            self.lastOffset = max(self.lastOffset, self._toAck)
        self._unacked += len(batch)
        if outgoing:
            self._fanOut(outgoing)
        self._scheduleAck()

    def _fanOut(self, outgoing: list[tuple[str, int, bytes]]) -> None:
        """
        Write framed messages (with their topics, in queue order) to every client
        subscribed to them: one write per client, and a topic's frames joined once
        for all the clients that have no other topic in this batch.
        """
        byTopic: dict[str, list[bytes]] = {}
        for topic, _, frame in outgoing:
            byTopic.setdefault(topic, []).append(frame)
        topicsOf: dict[SubscribeHandler, list[str]] = {}
        delivered = 0
        for topic, topicFrames in byTopic.items():
            clients = self.registry.subscribers(topic)
            delivered += len(clients) * len(topicFrames)
            for client in clients:
                topicsOf.setdefault(client, []).append(topic)
        self.delivered += delivered
        joined: dict[str, bytes] = {}
        if self.holding:
            # Clients recovering history: their messages wait, or are filtered (see hold).
            for client in self.holding.intersection(topicsOf):
                wanted = set(topicsOf.pop(client))
                client.hold([item for item in outgoing if item[0] in wanted])
        for client, topics in topicsOf.items():
            if len(topics) == 1:
                data = joined.get(topics[0])
                if data is None:
                    data = joined[topics[0]] = b"".join(byTopic[topics[0]])
            else:
                wanted = set(topics)
                data = b"".join(frame for topic, _, frame in outgoing if topic in wanted)
            client.sendFrames(data)

    def _checkEpoch(self, epoch: str) -> None:
        if epoch != self.epoch:
            if self.epoch is not None:
                self.log.warn("msgqueue's store has a new epoch {epoch}: counting offsets from the start", epoch=epoch)
            self.epoch = epoch
            self.lastOffset = 0
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
        self, connection: StageServerProtocol, request: ConnectionRequest, reader: QueueReader, maxClientBuffer: int
    ) -> None:
        super().__init__(connection, request)
        self.reader = reader
        self.registry = reader.registry
        self.recovery: wire.Subscription | None = None
        """The subscribe with C{Since} whose history is being read, if any."""
        self.held: list[tuple[str, int, bytes]] = []
        self.heldBytes = 0
        self.replayAllowed = False
        """Whether the connection may have a replay's bytes more than usual waiting."""
        self.replayed: tuple[str, int] | None = None
        """After a recovery, while the reader is behind it: the pattern replayed and
        the offset the replay went up to (live messages up to it are duplicates)."""
        self.maxClientBuffer = maxClientBuffer
        connection.peerBufferLimit = maxClientBuffer
        self.topics: set[str] = set()
        self.aclFile = connection.factory.acl
        self.user = connection.user or ""
        self.maxSubscriptions = getattr(connection.factory, "maxSubscriptions", MAX_SUBSCRIPTIONS_PER_CLIENT)

    def received(self, payload: bytes, isBinary: bool) -> None:
        request = wire.parseSubscribe(payload, isBinary)
        if isinstance(request, wire.WireError):
            self.connection.sendError(request)
            return
        if request.subscribe:
            if self.aclFile is not None and not self.aclFile.acl.maySubscribe(self.user, request.topic):
                self.connection.sendError(wire.WireError(NOT_ALLOWED, request.id, request.hasId))
                return
            if request.topic not in self.topics and len(self.topics) >= self.maxSubscriptions:
                self.connection.sendError(
                    wire.WireError(f"at most {self.maxSubscriptions} subscriptions per connection", request.id, request.hasId)
                )
                return
            if request.since is not None and (self.recovery is not None or self.replayed is not None):
                self.connection.sendError(wire.WireError(
                    "one recovery at a time: send the next Since once the last one's Ack has come", request.id, request.hasId
                ))
                return
            self.topics.add(request.topic)
            self.registry.subscribe(request.topic, self)
            if request.since is not None:
                self._recover(request)
                return
        else:
            self.topics.discard(request.topic)
            self.registry.unsubscribe(request.topic, self)
        if request.hasId:
            self.connection.factory.stats.acks += 1
            self.connection.send(wire.ack(request.id))

    def closed(self) -> None:
        self._forget()
        self.reader.holding.discard(self)
        self.held = []

    # -- recovering what a client missed ------------------------------------------------

    def _recover(self, request: wire.Subscription) -> None:
        """
        Read msgqueue's history of the topic above the client's offset; meanwhile its
        live messages wait (L{hold}), so that the replay and what follows it have no
        gap and no duplicate.
        """
        assert request.since is not None
        self.recovery = request
        self.reader.holding.add(self)
        d = self.reader.requestHistory(request.topic, request.since.offset)
        d.addCallbacks(self._historyRead, self._historyUnavailable, callbackArgs=(request,), errbackArgs=(request,))
        d.addErrback(lambda failure: self.log.failure("recovering {topic} failed", failure, topic=request.topic))

    def _historyRead(self, reply: wire.HistoryReply, request: wire.Subscription) -> None:
        if self.recovery is not request or not self.connection.isOpen:
            return
        since = request.since
        assert since is not None
        held, self.held, self.heldBytes, self.recovery = self.held, [], 0, None
        pattern = request.topic
        if reply.error is not None or not reply.complete or reply.epoch != since.epoch:
            # Never a part presented as the whole: the client reloads its state as
            # of Offset, and gets what comes after it.
            epoch = reply.epoch or self.reader.epoch or ""
            upTo = reply.latest if reply.error is None else self.reader.lastOffset
            self.connection.send(wire.encode({"Ack": request.id, "Recovered": False, "Epoch": epoch, "Offset": upTo}))
            replay = b""
        else:
            assert reply.messages is not None
            upTo = reply.latest
            replay = b"".join(frames.textFrame(wire.delivery(topic, content, offset, reply.epoch))
                              for offset, topic, content in reply.messages)
            self.connection.send(wire.encode({"Ack": request.id, "Recovered": True}))
            # The replay may pass the client's usual bound: it may have that much
            # more waiting until it has read it (see sendFrames).
            self.connection.peerBufferLimit = self.maxClientBuffer + len(replay)
            self.replayAllowed = True
        # Live messages up to upTo on the pattern are in the replay (or in the state
        # the client reloads): dropped, now and until the reader has passed upTo.
        live = b"".join(frame for topic, offset, frame in held if not (offset <= upTo and matches(pattern, topic)))
        if self.reader.lastOffset >= upTo:
            self.reader.holding.discard(self)
        else:
            self.replayed = (pattern, upTo)
        self.sendFrames(replay + live)

    def _historyUnavailable(self, failure: Failure, request: wire.Subscription) -> None:
        failure.trap(HistoryUnavailable)
        reply = wire.HistoryReply(0, error=failure.getErrorMessage())
        self._historyRead(reply, request)

    def hold(self, items: list[tuple[str, int, bytes]]) -> None:
        """
        Messages for a client that is recovering history: kept until the history
        arrives (at most L{maxClientBuffer} bytes: past that it is a slow consumer);
        after the replay, those the replay already held are dropped until the
        reader has passed the replay's last offset.
        """
        if self.recovery is not None:
            self.held.extend(items)
            self.heldBytes += sum(len(frame) for _, _, frame in items)
            if self.heldBytes > self.maxClientBuffer:
                self.held, self.heldBytes = [], 0
                self.reader.holding.discard(self)
                self.connection.closeSlowConsumer()
                self._forget()
            return
        if self.replayed is None:
            self.sendFrames(b"".join(frame for _, _, frame in items))
            return
        pattern, upTo = self.replayed
        self.sendFrames(b"".join(frame for topic, offset, frame in items if not (offset <= upTo and matches(pattern, topic))))
        if self.reader.lastOffset >= upTo:
            self.replayed = None
            self.reader.holding.discard(self)

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
        if not connection.isOpen or not data:
            return
        connection.sendFrames(data)
        if self.replayAllowed and (unsentBytes(connection) or 0) <= self.maxClientBuffer:
            # The replay has been read: the usual bound again.
            self.replayAllowed = False
            connection.peerBufferLimit = self.maxClientBuffer
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
            "/subscribe": lambda connection, request: SubscribeHandler(connection, request, reader, maxClientBuffer)
        },
        authenticator,
        replace(limits, maxPeerBuffer=maxClientBuffer),
        reactor,
    )
