# -*- test-case-name: tests.test_msgqueue -*-
"""
The msgqueue stage: C{/pushmsg} appends messages, C{/popmsg} hands them out.

Frames on C{/pushmsg} are one message object (C{Topic}, C{Content}, optionally
C{Id}), a JSON array of them, or the publisher's batch C{{"Messages": [[Id, Topic,
Content], ...]}}.  Once a frame's messages are in the store, msgqueue answers
C{{"Ack": <last Id in the frame>}}.  A pusher that names itself
(C{/pushmsg?producer=NAME}) numbers its messages with increasing integer Ids, and
msgqueue skips any it has already stored, so the pusher may resend everything
unacknowledged after a reconnect.

C{/popmsg?group=NAME&ack=explicit|none} joins a consumer group.  Each message goes
out as C{{"Topic", "Content", "Offset", "Epoch"}}.  With C{ack=explicit} the consumer
answers C{{"Ack": offset}}, which acknowledges that offset and everything delivered
to it before (cumulative in delivery order), and has at most C{--max-in-flight} messages
unacknowledged; what it has not acknowledged when it leaves goes to the next consumer
of its group.  With C{ack=none} (the default, what the Go subscriber did) a message
counts as done once written.  With C{batch=1} messages go out many to a frame.

Every frame on both endpoints is encoded and parsed in L{wsqueue.wire}, which
documents each one ("Between the stages"); this module only decides when to send them.
"""

from __future__ import annotations

import itertools
import uuid

from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from wsqueue import wire
from wsqueue.auth import BasicAuthenticator
from wsqueue.broker import QueueBroker, describe
from wsqueue.connection import Limits
from wsqueue.server import EndpointHandler, StageServerFactory, StageServerProtocol
from wsqueue.store.base import Entry, History

_consumerNumbers = itertools.count(1)
DAEMON_NAME = uuid.uuid4().hex[:12]
"""This process's part of its consumers' names: msgqueue daemons sharing a store
(Redis) must never give two consumers the same name, or one's departure would give
back the other's entries."""

BATCH_FRAME_BYTES = 32 * 1024
"""About how much one batch frame to a C{batch=1} consumer carries, as estimated by
L{wire.batchEntryBytes} (a frame ends with the message that reaches it)."""


def _param(request: ConnectionRequest, name: str, default: str) -> str:
    values = request.params.get(name)
    return values[0] if values else default


class PusherFlow:
    """
    How the broker pauses and resumes one pusher: by the connection's
    C{pauseReading}/C{resumeReading}, which also suspend the ping timeout (a peer
    we stopped reading cannot answer pings).
    """

    def __init__(self, connection: StageServerProtocol) -> None:
        self.connection = connection

    def pauseProducing(self) -> None:
        self.connection.pauseReading()

    def resumeProducing(self) -> None:
        self.connection.resumeReading()


class PushHandler(EndpointHandler):
    """
    A connection on C{/pushmsg}: appends what it sends, paused while the queue is
    full (for a bounded time: then its messages are refused with an Error).
    """

    def __init__(self, connection: StageServerProtocol, request: ConnectionRequest, broker: QueueBroker) -> None:
        super().__init__(connection, request)
        self.broker = broker
        self.producer = request.params.get("producer", [None])[0]
        if self.producer is not None and wire.checkTopic(self.producer) is not None:
            raise ConnectionDeny(400, "producer must be 1 to 256 characters without spaces")
        self.flow = PusherFlow(connection)

    def opened(self) -> None:
        self.broker.addPusher(self.flow)

    def closed(self) -> None:
        self.broker.removePusher(self.flow)

    def received(self, payload: bytes, isBinary: bool) -> None:
        parsed = wire.parsePush(payload, isBinary)
        if isinstance(parsed, wire.WireError):
            self.connection.sendError(parsed)
            return
        refusal = self.broker.refusal()
        if refusal is not None:
            self._refuse([message.id for message in parsed if message.hasId], refusal)
            return
        messages: list[tuple[str, str]] = []
        seqs: list[int] = []
        ids: list[wire.JSONId] = []
        for message in parsed:
            if isinstance(message, wire.WireError):
                self.connection.sendError(message)
                continue
            if self.producer is not None:
                if not isinstance(message.id, int) or isinstance(message.id, bool):
                    self.connection.sendError(wire.WireError("Id must be an integer sequence number for a named producer", message.id, message.hasId))
                    continue
                seqs.append(message.id)
            if message.hasId:
                ids.append(message.id)
            messages.append((message.topic, message.content))
        if not messages:
            return
        d = self.broker.push(messages, self.producer, seqs if self.producer is not None else None)
        d.addCallbacks(self._stored, self._failed, callbackArgs=(ids,), errbackArgs=(ids,))

    def _refuse(self, ids: list[wire.JSONId], reason: str) -> None:
        """
        Tell the pusher that none of a frame's messages were stored: an Error for each
        Id (so a cumulative Ack that follows never covers them), or one without.
        """
        for requestId in ids:
            self.connection.sendError(wire.WireError(reason, requestId, True))
        if not ids:
            self.connection.sendError(wire.WireError(reason))

    def _stored(self, offsets: list[int | None], ids: list[wire.JSONId]) -> None:
        # Resends skipped as already stored (None offsets) are acknowledged too.
        if ids:
            self.connection.send(wire.ack(ids[-1]))

    def _failed(self, failure, ids: list[wire.JSONId]) -> None:
        # One line per 10 s for every pusher together: a full disk fails every frame.
        self.broker.storeErrors.emit("storing pushed messages failed: {error}", error=describe(failure))
        self._refuse(ids, "msgqueue could not store the message")


@implementer(IPushProducer)
class PopHandler(EndpointHandler):
    """
    A connection on C{/popmsg}: one consumer of a group.  It is its transport's
    producer, so that delivery stops while the connection's write buffer is full.
    """

    def __init__(self, connection: StageServerProtocol, request: ConnectionRequest, broker: QueueBroker) -> None:
        super().__init__(connection, request)
        self.broker = broker
        self.group = _param(request, "group", "default")
        problem = wire.checkTopic(self.group)
        if problem is not None:
            raise ConnectionDeny(400, "group " + problem.removeprefix("Topic "))
        mode = _param(request, "ack", "none")
        if mode not in ("explicit", "none"):
            raise ConnectionDeny(400, 'ack must be "explicit" or "none"')
        self.explicitAck = mode == "explicit"
        batch = _param(request, "batch", "0")
        if batch not in ("0", "1"):
            raise ConnectionDeny(400, 'batch must be "0" or "1"')
        self.batch = batch == "1"
        self.name = f"{DAEMON_NAME}/{connection.peer}#{next(_consumerNumbers)}"
        self.writable = True

    def opened(self) -> None:
        transport = self.connection.transport
        assert transport is not None  # the WebSocket is open
        transport.registerProducer(self, True)
        self.broker.addConsumer(self)

    def closed(self) -> None:
        self.writable = False
        self.broker.removeConsumer(self)

    def deliver(self, entries: list[Entry], epoch: str) -> None:
        send = self.connection.send
        if self.batch:
            # Frames of about BATCH_FRAME_BYTES: the subscriber writes a whole
            # frame's messages to its clients in one go, and a burst far larger than
            # a socket read would look like a slow consumer to --max-client-buffer.
            messages: list = []
            size = 0
            for entry in entries:
                messages.append(entry[:3])  # (offset, topic, content): a JSON array
                size += wire.batchEntryBytes(entry.topic, entry.content)
                if size >= BATCH_FRAME_BYTES:
                    send(wire.deliveryBatch(epoch, messages))
                    messages, size = [], 0
            if messages:
                send(wire.deliveryBatch(epoch, messages))
            return
        for entry in entries:
            send(wire.delivery(entry.topic, entry.content, entry.offset, epoch))

    def received(self, payload: bytes, isBinary: bool) -> None:
        upTo = wire.parseConsumerFrame(payload, isBinary)
        if isinstance(upTo, wire.WireError):
            self.connection.sendError(upTo)
            return
        if isinstance(upTo, wire.HistoryRequest):
            self._history(upTo)
            return
        if not self.explicitAck:
            self.connection.sendError(wire.WireError("this consumer joined with ack=none; acks are not needed"))
            return
        self.broker.ack(self, upTo)

    def _history(self, request: wire.HistoryRequest) -> None:
        """
        Answer a subscriber's history request (a client recovering what it missed).
        """

        def found(history: History) -> None:
            messages = [list(entry[:3]) for entry in history.entries]
            self.connection.send(wire.historyReply(request.id, history.epoch, history.latest, history.complete, messages))

        def failed(failure: Failure) -> None:
            self.log.failure("reading the history of {topic} failed", failure, topic=request.topic)
            self.connection.send(wire.historyFailed(request.id, "msgqueue could not read the history"))

        self.broker.history(request.topic, request.after).addCallbacks(found, failed)

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self) -> None:
        self.writable = False

    def resumeProducing(self) -> None:
        self.writable = True
        self.broker.consumerWritable()

    def stopProducing(self) -> None:
        self.writable = False


def makeMsgQueueFactory(
    broker: QueueBroker, authenticator: BasicAuthenticator, limits: Limits, reactor
) -> StageServerFactory:
    """
    The WebSocket server factory of msgqueue.
    """
    return StageServerFactory(
        {
            "/pushmsg": lambda connection, request: PushHandler(connection, request, broker),
            "/popmsg": lambda connection, request: PopHandler(connection, request, broker),
        },
        authenticator,
        limits.internal(),
        reactor,
    )
