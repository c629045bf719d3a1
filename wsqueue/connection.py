# -*- test-case-name: tests.test_connection -*-
"""
What every wsqueue WebSocket connection shares, server side (L{wsqueue.server}) and
client side (L{wsqueue.link}, and through it L{wsqueue.client}): the protocol limits
and the one function that applies them, closing with the codes RFC 6455 gives a
server, and L{StageConnection}, the mixin for what each connection does the same
way: logging, no Nagle delay, C{isOpen} and C{send}.
"""

from __future__ import annotations

from dataclasses import dataclass

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.logger import Logger

from wsqueue import _compat, frames

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
ENVELOPE_SLACK = 4096
"""Room for what stages add around a client's message (ids, offsets) on internal links."""
MAX_PEER_BUFFER = 1024 * 1024
"""Default of L{Limits.maxPeerBuffer}: the subscriber's default C{--max-client-buffer}."""
DELIVERY_BURST = 500
"""The most messages msgqueue writes to one consumer in one go (the broker's C{READ_BATCH}):
flow control pauses a consumer only after such a burst, so its bound must hold one."""


@dataclass(frozen=True)
class Limits:
    """
    The protocol limits of one daemon, applied to every connection it makes or takes.

    @ivar maxMessageSize: the largest message a client may send, in bytes; bigger
        ones are refused with close code 1009.
    @ivar pingInterval: seconds between WebSocket pings; a peer that does not answer
        within the same time is dropped.
    @ivar maxPeerBuffer: the most bytes that may wait for one peer beyond what its
        transport holds before it pushes back (see L{wsqueue._compat.unsentBytes}), whatever queued
        them: messages, Acks and Errors, and Autobahn's pongs and close frames.  A
        peer that would pass it is closed as a slow consumer (see
        L{wsqueue.server.StageServerProtocol}).
    """

    maxMessageSize: int = 1024 * 1024
    pingInterval: float = 20.0
    handshakeTimeout: float = HANDSHAKE_TIMEOUT
    maxPeerBuffer: int = MAX_PEER_BUFFER
    maxConnections: int = 0
    """Connections a daemon's server holds at most (0: no limit); past it, 503."""
    maxConnectionsPerAddress: int = 0
    """Connections from one client address at most (0: no limit); past it, 503."""
    maxPublishRate: float = 0.0
    """Messages per second one connection may send on /publish (0: no limit)."""
    publishBurst: int = 0
    """How many messages above that rate a connection may send at once (0: one second's worth)."""

    def internal(self) -> Limits:
        """
        The limits for stage-to-stage links, whose frames wrap client messages, and
        whose peers (msgqueue's consumers) take deliveries in bursts of up to
        L{DELIVERY_BURST} messages before flow control can pause them.
        """
        maxMessageSize = self.maxMessageSize + ENVELOPE_SLACK
        return Limits(
            maxMessageSize, self.pingInterval, self.handshakeTimeout,
            self.maxPeerBuffer + DELIVERY_BURST * maxMessageSize,
            maxConnections=self.maxConnections, maxConnectionsPerAddress=self.maxConnectionsPerAddress,
        )


def closeWith(protocol, code: int, reason: str) -> None:
    """
    Start the closing handshake with C{code}.  Autobahn's C{sendClose} accepts only
    1000 and 3000-4999 from applications, but RFC 6455 gives 1001 (going away) to a
    server that shuts down, and 1008 to a policy violation.
    """
    if protocol.state == protocol.STATE_OPEN:
        _compat.sendCloseWithAnyCode(protocol, code, reason.encode("utf-8")[:123])


def applyLimits(factory, limits: Limits) -> None:
    """
    Set every protocol option wsqueue relies on; Autobahn's defaults are unsafe for a
    server (no size limit, no pings, a status page for plain HTTP requests).
    """
    options = {
        "maxFramePayloadSize": limits.maxMessageSize,
        "maxMessagePayloadSize": limits.maxMessageSize,
        "autoPingInterval": limits.pingInterval,
        "autoPingTimeout": limits.pingInterval,
        "openHandshakeTimeout": limits.handshakeTimeout,
        "closeHandshakeTimeout": CLOSE_TIMEOUT,
        "failByDrop": False,
    }
    if isinstance(factory, WebSocketServerFactory):
        options["webStatus"] = False
        # Autobahn's own Origin check lets every origin through but refuses "null"
        # with a 400; wsqueue decides on Origins itself, with a 403 (see
        # wsqueue.server.StageServerFactory.allowsOrigin).
        options["allowNullOrigin"] = True
    factory.setProtocolOptions(**options)


class StageConnection(frames.WholeFrames):
    """
    For an Autobahn WebSocket protocol (listed before it among the bases): what a
    wsqueue connection does the same way whichever side it is on, including reading
    and writing whole frames itself (L{frames.WholeFrames}).
    """

    # Not 'log': that is Autobahn's own txaio logger (debug lines per frame), kept
    # to errors here, since its info and warning lines repeat what eventLog says (two
    # more lines per refused handshake or failed link attempt, one per dropped peer).
    # txaio binds make_logger at import (txaio._use_framework), out of mypy's sight.
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]
    eventLog = Logger()

    def connectionMade(self) -> None:
        super().connectionMade()
        # Frames are small and answered: Nagle's algorithm would hold each for the
        # peer's delayed ACK (tens of milliseconds of latency per hop).
        _compat.setNoDelay(self.transport)

    @property
    def isOpen(self) -> bool:
        return self.state == self.STATE_OPEN

    def send(self, payload: bytes) -> bool:
        """
        Send a text frame if the connection is open; say whether it was sent.
        Frames for a connection that is closing or gone are dropped here, not raised.
        """
        if self.state == self.STATE_OPEN:
            self.sendText(payload)
            return True
        return False


class ServerStats:
    """
    What one server factory counts, read by L{wsqueue.metrics.DaemonMetrics} at scrape time.
    """

    __slots__ = ("acks", "errors", "rateLimited", "received", "refused", "signinFailures", "slowConsumers")

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.signinFailures = 0
        self.slowConsumers = 0
        self.rateLimited = 0
        self.acks = 0

    def refuse(self, reason: str) -> None:
        """
        Count a refused handshake or request, by reason (a fixed set, see L{wsqueue.metrics}).
        """
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def error(self, reason: str) -> None:
        """
        Count an Error frame sent, by the kind of its reason (L{errorKind}).
        """
        kind = errorKind(reason)
        self.errors[kind] = self.errors.get(kind, 0) + 1


ERROR_KINDS = ("bad_input", "not_allowed", "limit", "full", "store", "stopping", "internal")
"""The kinds of Error frames the metrics count (a fixed set: reasons are free text)."""


def errorKind(reason: str) -> str:
    """
    The kind (one of L{ERROR_KINDS}) of an Error frame's reason.
    """
    if reason.startswith("not allowed"):
        return "not_allowed"
    if reason == "internal error":
        return "internal"
    if "full" in reason:
        return "full"
    if "shutting down" in reason:
        return "stopping"
    if "could not store" in reason or "could not read" in reason:
        return "store"
    if reason.startswith(("at most", "one recovery at a time")):
        return "limit"
    return "bad_input"
