# -*- test-case-name: tests.test_publisher -*-
"""
The publisher stage: clients publish on C{/publish}; a L{Forwarder} passes their
messages to msgqueue over one reconnecting link.

The forwarder numbers every message and keeps it until msgqueue acknowledges it, so
that after a reconnect it resends whatever was not acknowledged (msgqueue skips
numbers it already has).  It holds at most C{--max-buffered} messages: at that bound
every publishing client is paused by TCP flow control, and a message that still
arrives past a small overshoot is refused with an C{Error}, never dropped silently.

The frames to and from msgqueue (the batch, its Ack and Error replies) are encoded and
parsed in L{wsqueue.wire}, which documents each one ("Between the stages").
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Protocol

from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wsqueue import wire
from wsqueue.auth import BasicAuthenticator
from wsqueue.coalesce import CoalescedCall
from wsqueue.connection import POLICY_VIOLATION, Limits, closeWith
from wsqueue.flow import FlowGate
from wsqueue.link import LinkOwner, LinkProtocol
from wsqueue.logsummary import RepeatSummary
from wsqueue.server import EndpointHandler, StageServerFactory, StageServerProtocol

BATCH_MESSAGES = 1000
BATCH_BYTES = 256 * 1024
NOT_ALLOWED = "not allowed"
"""The Error for what the ACL (C{--acl}) does not allow the user."""
DEFAULT_PAUSE_LIMIT = 10.0
"""Seconds publishing clients stay paused (half the default ping interval) before
their messages are refused with an Error instead."""


class MessageOrigin(Protocol):
    """
    Who published a message, and hears msgqueue's answer to it: a WebSocket client
    (L{PublishHandler}), or an HTTP request (L{wsqueue.web.publish}).
    """

    def acknowledge(self, clientId: wire.JSONId) -> None: ...

    def refuse(self, error: wire.WireError) -> None: ...


class _Held:
    """
    A message the forwarder holds until msgqueue acknowledges it.
    """

    __slots__ = ("clientId", "content", "hasId", "origin", "seq", "topic")

    def __init__(
        self, seq: int, topic: str, content: str, origin: MessageOrigin, clientId: wire.JSONId, hasId: bool
    ) -> None:
        self.seq = seq
        self.topic = topic
        self.content = content
        self.origin = origin
        self.clientId = clientId
        self.hasId = hasId


class Forwarder(LinkOwner):
    """
    Carries published messages to msgqueue in order, in batches, until acknowledged.

    @ivar producerName: this process's name towards msgqueue's de-duplication.
    @ivar batchBytes: the most bytes one frame to msgqueue carries; it must stay
        within msgqueue's C{--max-message-size} (a bigger message goes alone).
    @ivar flow: pauses publishing clients at C{maxBuffered} held messages, for at
        most C{pauseLimit} seconds, then refuses their messages until msgqueue has
        taken half (L{wsqueue.flow.FlowGate}).
    """

    log = Logger()

    def __init__(
        self, clock, maxBuffered: int = 10_000, batchBytes: int = BATCH_BYTES, pauseLimit: float = DEFAULT_PAUSE_LIMIT
    ) -> None:
        self.clock = clock
        self.batchBytes = batchBytes
        self.producerName = uuid.uuid4().hex
        self.stopping = False
        # Clients resume once msgqueue has taken half of what is held; up to a
        # tenth more (at least 100) may arrive from clients already being read.
        self.flow = FlowGate(clock, maxBuffered, pauseLimit, self, hysteresis=2, overshoot=100)
        self._refusals = RepeatSummary(self.log, clock)
        self._seq = 0
        self._unsent: deque[_Held] = deque()
        self._inFlight: deque[_Held] = deque()
        self._flushCall = CoalescedCall(clock, self._flush)
        self._drained: list[Deferred[None]] = []

    @property
    def held(self) -> int:
        return len(self._unsent) + len(self._inFlight)

    # -- clients ---------------------------------------------------------------

    def addClient(self, client: PublishHandler) -> None:
        self.flow.addSender(client)

    def removeClient(self, client: PublishHandler) -> None:
        self.flow.removeSender(client)

    def submit(self, message: wire.Message, origin: MessageOrigin) -> wire.WireError | None:
        """
        Take a client's message for msgqueue, or say why it cannot be taken.
        """
        if self.stopping:
            return wire.WireError("publisher is shutting down; message not accepted", message.id, message.hasId)
        if self.flow.refuses(self.held):
            return wire.WireError(
                "publisher buffer is full (msgqueue is away or slow); message not accepted",
                message.id, message.hasId,
            )
        self._seq += 1
        self._unsent.append(_Held(self._seq, message.topic, message.content, origin, message.id, message.hasId))
        self.flow.update(self.held)
        self._scheduleFlush()
        return None

    # -- what the flow gate does, said in the log (FlowListener) ------------------

    def flowPaused(self, level: int, senders: int) -> None:
        self.log.info("pausing {count} publishing client(s): {held} message(s) held for msgqueue",
                      count=senders, held=level)

    def flowRefusing(self, level: int, senders: int) -> None:
        # A paused client gets no answer at all: past the pause limit it is read
        # again, and what it sends is refused with an Error until msgqueue has taken
        # half of what is held, so that it knows within a bounded time.
        self.log.warn(
            "msgqueue took nothing for {limit} s ({held} message(s) held): refusing new messages with an Error "
            "until it catches up; resuming {count} publishing client(s)",
            limit=self.flow.pauseLimit, held=level, count=senders,
        )

    def flowReopened(self, level: int, senders: int, wasPaused: bool) -> None:
        if wasPaused:
            self.log.info("resuming {count} publishing client(s): {held} message(s) held for msgqueue",
                          count=senders, held=level)
        else:
            self._refusals.flush()
            self.log.info("msgqueue caught up: accepting messages again")

    # -- the link ---------------------------------------------------------------

    def _scheduleFlush(self) -> None:
        if self._link is not None:
            self._flushCall.schedule()

    def _flush(self) -> None:
        unsent, inFlight = self._unsent, self._inFlight
        while unsent and self._link is not None and self._link.isOpen:
            batch: list[list] = []
            size = 0
            while unsent and len(batch) < BATCH_MESSAGES:
                held = unsent[0]
                size += wire.batchEntryBytes(held.topic, held.content)
                if batch and size > self.batchBytes:
                    break
                unsent.popleft()
                batch.append([held.seq, held.topic, held.content])
                inFlight.append(held)
            frame = wire.pushBatch(batch)
            while len(frame) > self.batchBytes and len(batch) > 1:
                # Escaped text (quotes, control characters) is longer than estimated:
                # a frame past msgqueue's limit would close the link, and be resent
                # after every reconnect.  Put the second half back.
                keep = len(batch) // 2
                for _ in range(len(batch) - keep):
                    unsent.appendleft(inFlight.pop())
                del batch[keep:]
                frame = wire.pushBatch(batch)
            self._link.send(frame)

    def linkOpened(self, link: LinkProtocol) -> None:
        super().linkOpened(link)
        if self._inFlight:
            self.log.info("resending {count} unacknowledged message(s) to msgqueue", count=len(self._inFlight))
            self._inFlight.extend(self._unsent)
            self._unsent, self._inFlight = self._inFlight, deque()
        self._scheduleFlush()

    def linkReceived(self, link: LinkProtocol, payload: bytes, isBinary: bool) -> None:
        reply = wire.parsePushReply(payload, isBinary)
        if isinstance(reply, wire.Acked):
            self._acked(reply.upTo)
        elif isinstance(reply, wire.Refused):
            self._refused(reply.reason, reply.seq)
        else:
            self.unexpectedFrame(payload)

    def drain(self) -> Deferred[None]:
        """
        Refuse new messages from now on; fire once msgqueue has acknowledged (or
        refused) everything held.  The daemon's --shutdown-timeout bounds the wait.
        """
        self.stopping = True
        # New messages are refused from now on: let paused clients hear so.
        self.flow.stop(resume=True)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._checkDrained()
        return d

    def _checkDrained(self) -> None:
        if self.stopping and not self.held:
            self._refusals.flush()
            self._drained, waiting = [], self._drained
            for d in waiting:
                d.callback(None)

    def _acked(self, upTo: int) -> None:
        while self._inFlight and self._inFlight[0].seq <= upTo:
            held = self._inFlight.popleft()
            if held.hasId:
                # Each acknowledgement on its own: one that fails must not keep the
                # rest (of this client and of others) from theirs.
                try:
                    held.origin.acknowledge(held.clientId)
                except Exception:  # noqa: BLE001 -- logged; the next one goes on
                    self.log.failure("acknowledging message {seq} to its client failed", seq=held.seq)
        self.flow.update(self.held)
        self._checkDrained()

    def _refused(self, reason: str, seq: int | None) -> None:
        for held in self._inFlight:
            if held.seq == seq:
                self._inFlight.remove(held)
                # Summarised: a full or failing msgqueue refuses every message.
                self._refusals.emit("msgqueue refused a message: {reason}", reason=reason)
                held.origin.refuse(wire.WireError(reason, held.clientId, held.hasId))
                self.flow.update(self.held)
                self._checkDrained()
                return
        self._refusals.emit("msgqueue reported an error: {reason}", reason=reason)


class PublishHandler(EndpointHandler):
    """
    A client on C{/publish}.
    """

    def __init__(self, connection: StageServerProtocol, request: ConnectionRequest, forwarder: Forwarder) -> None:
        super().__init__(connection, request)
        self.forwarder = forwarder
        self.aclFile = connection.factory.acl
        self.user = connection.user or ""
        limits = connection.factory.limits
        self.rate = limits.maxPublishRate
        self.burst = float(limits.publishBurst or max(1, int(self.rate)))
        self.tokens = self.burst
        self.refilledAt = forwarder.clock.seconds()
        self.overRate = False

    def opened(self) -> None:
        self.forwarder.addClient(self)

    def closed(self) -> None:
        self.forwarder.removeClient(self)

    def received(self, payload: bytes, isBinary: bool) -> None:
        if self.rate and not self._withinRate():
            return
        message: wire.Message | wire.WireError | None = wire.parsePublish(payload, isBinary)
        if isinstance(message, wire.Message):
            if self.aclFile is not None and not self.aclFile.acl.mayPublish(self.user, message.topic):
                message = wire.WireError(NOT_ALLOWED, message.id, message.hasId)
            else:
                message = self.forwarder.submit(message, self)
        if message is not None:
            self.connection.sendError(message)

    def _withinRate(self) -> bool:
        """
        Take a token from the connection's bucket (C{--max-publish-rate}, refilled
        continuously, holding C{--publish-burst}); with none left, close the
        connection (1008) instead: a client past the rate is told, not slowed in silence.
        """
        if self.overRate:
            return False  # closing: what is still read is dropped, as the close said
        now = self.forwarder.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.refilledAt) * self.rate)
        self.refilledAt = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.overRate = True
        self.connection.factory.stats.rateLimited += 1
        self.log.info("closing {user} on /publish: above {rate} messages/s", user=self.user, rate=self.rate)
        closeWith(self.connection, POLICY_VIOLATION, f"publish rate above {self.rate:g} messages/s")
        return False

    def acknowledge(self, clientId: wire.JSONId) -> None:
        self.connection.factory.stats.acks += 1
        self.connection.send(wire.ack(clientId))

    def refuse(self, error: wire.WireError) -> None:
        self.connection.sendError(error)

    def pauseProducing(self) -> None:
        # Not reading also means not reading pongs: the ping timeout waits meanwhile.
        self.connection.pauseReading()

    def resumeProducing(self) -> None:
        self.connection.resumeReading()


def makePublisherFactory(
    forwarder: Forwarder, authenticator: BasicAuthenticator, limits: Limits, reactor
) -> StageServerFactory:
    """
    The WebSocket server factory of the publisher.
    """
    return StageServerFactory(
        {"/publish": lambda connection, request: PublishHandler(connection, request, forwarder)},
        authenticator,
        limits,
        reactor,
    )
