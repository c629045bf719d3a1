# -*- test-case-name: tests.test_subscriber -*-
"""
The subscriber stage: clients subscribe to topics on C{/subscribe}; a L{QueueReader}
reads msgqueue as one consumer of the daemon's group and fans each message out.

Each message is framed once for all its receivers (a prepared message) and written
without waiting for any client, so a slow client does not hold up the others.  The
reader acknowledges offsets to msgqueue once it has handed a message to its clients'
connections, and drops an offset it has recently handled (a redelivery after a
reconnect), so clients see each message once; a new store epoch starts over.
"""

from __future__ import annotations

import json
from collections import deque

from autobahn.websocket.types import ConnectionRequest
from twisted.logger import Logger

from wsqueue import wire
from wsqueue.auth import BasicAuthenticator
from wsqueue.link import LinkOwner, LinkProtocol
from wsqueue.server import EndpointHandler, Limits, StageServerFactory, StageServerProtocol

MAX_SUBSCRIPTIONS_PER_CLIENT = 10_000
RECENT_OFFSETS = 100_000
"""How many handled offsets are remembered to recognise a redelivery (well above
msgqueue's window of unacknowledged messages per consumer)."""


class TopicRegistry:
    """
    Which clients are subscribed to which topic.
    """

    def __init__(self) -> None:
        self._byTopic: dict[str, set[SubscribeHandler]] = {}

    def subscribe(self, topic: str, client: SubscribeHandler) -> None:
        self._byTopic.setdefault(topic, set()).add(client)

    def unsubscribe(self, topic: str, client: SubscribeHandler) -> None:
        clients = self._byTopic.get(topic)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._byTopic[topic]

    def subscribers(self, topic: str) -> set[SubscribeHandler]:
        return self._byTopic.get(topic, set())

    @property
    def topics(self) -> int:
        return len(self._byTopic)


class QueueReader(LinkOwner):
    """
    Reads msgqueue (the link's owner) and delivers each message to its topic's clients.
    """

    log = Logger()

    def __init__(self, registry: TopicRegistry, clock) -> None:
        self.registry = registry
        self.clock = clock
        self.factory: StageServerFactory | None = None
        self.epoch: str | None = None
        self._recent: set[int] = set()
        self._recentOrder: deque[int] = deque()
        self._ackCall = None
        self._toAck: int | None = None

    def linkOpened(self, link: LinkProtocol) -> None:
        super().linkOpened(link)
        self._toAck = None

    def linkReceived(self, link: LinkProtocol, payload: bytes, isBinary: bool) -> None:
        try:
            frame = json.loads(payload)
            topic, offset, epoch = frame["Topic"], frame["Offset"], frame["Epoch"]
        except (ValueError, TypeError, KeyError):
            self.unexpectedFrame(payload)
            return
        if epoch != self.epoch:
            if self.epoch is not None:
                self.log.warn("msgqueue's store has a new epoch {epoch}: counting offsets from the start", epoch=epoch)
            self.epoch = epoch
            self._recent.clear()
            self._recentOrder.clear()
        if offset not in self._recent:
            self._remember(offset)
            self._deliver(topic, payload)
        self._toAck = offset
        self._scheduleAck()

    def _remember(self, offset: int) -> None:
        self._recent.add(offset)
        self._recentOrder.append(offset)
        if len(self._recentOrder) > RECENT_OFFSETS:
            self._recent.discard(self._recentOrder.popleft())

    def _deliver(self, topic: str, payload: bytes) -> None:
        clients = self.registry.subscribers(topic)
        if not clients:
            return
        prepared = self.factory.prepareMessage(payload)
        for client in clients:
            client.sendPrepared(prepared)

    def _scheduleAck(self) -> None:
        if self._ackCall is None:
            self._ackCall = self.clock.callLater(0, self._sendAck)

    def _sendAck(self) -> None:
        self._ackCall = None
        # Acknowledges this offset and everything msgqueue delivered before it.
        if self._link is not None and self._toAck is not None and self._link.send(wire.encode({"Ack": self._toAck})):
            self._toAck = None


class SubscribeHandler(EndpointHandler):
    """
    A client on C{/subscribe}.
    """

    def __init__(self, connection: StageServerProtocol, request: ConnectionRequest, registry: TopicRegistry) -> None:
        super().__init__(connection, request)
        self.registry = registry
        self.topics: set[str] = set()

    def received(self, payload: bytes, isBinary: bool) -> None:
        request = wire.parseSubscribe(payload, isBinary)
        if isinstance(request, wire.WireError):
            self.connection.sendError(request)
            return
        if request.subscribe:
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
        for topic in self.topics:
            self.registry.unsubscribe(topic, self)
        self.topics.clear()

    def sendPrepared(self, prepared) -> None:
        if self.connection.isOpen:
            self.connection.sendPreparedMessage(prepared)


def makeSubscriberFactory(
    reader: QueueReader, authenticator: BasicAuthenticator, limits: Limits, reactor
) -> StageServerFactory:
    """
    The WebSocket server factory of the subscriber (and its reader's broadcast framing).
    """
    factory = StageServerFactory(
        {"/subscribe": lambda connection, request: SubscribeHandler(connection, request, reader.registry)},
        authenticator,
        limits,
        reactor,
    )
    reader.factory = factory
    return factory
