# -*- test-case-name: tests.test_link -*-
"""
Stage-to-stage connections: a publisher's or subscriber's link to msgqueue.

A L{QueueLink} keeps one WebSocket open to msgqueue through L{ClientService}, with
exponential backoff.  L{ClientService} counts a connection as made once TCP is up and
then retries at its first delay again; a handshake that keeps failing (a 401, a TLS
error) would be retried four times a second forever.  So the link counts failed
handshakes itself and adds them to the attempt number its retry policy sees, and a
401 is reported loudly.  (C{prepareConnection} cannot do this: when it fails, the
connection's later loss has no transition in L{ClientService}'s state machine.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from wsqueue._compat import QuietClientService, cancelCloseHandshakeTimer, handshakeStatusLine, notCleanReason
from wsqueue.auth import basicHeader
from wsqueue.connection import GOING_AWAY, Limits, StageConnection, applyLimits, closeWith
from wsqueue.logsummary import RepeatSummary

RetryPolicy = Callable[[int], float]
FAILURE_SUMMARY_INTERVAL = 60.0
"""A link that keeps failing logs its first failure, then a count once a minute."""


def defaultRetryPolicy(jitter: Callable[[], float] | None = None) -> RetryPolicy:
    """
    0.25 s, doubling up to 5 s between attempts: a restarted msgqueue is found within 5 s.
    """
    kwargs = {} if jitter is None else {"jitter": jitter}
    return backoffPolicy(initialDelay=0.25, factor=2.0, maxDelay=5.0, **kwargs)


class HandshakeFailed(Exception):
    """
    The TCP (and TLS) connection was made but the WebSocket did not open.

    @ivar status: the HTTP status the server answered with, if it answered.
    @ivar reason: why, in a few words.
    @ivar statusReason: the reason phrase of that answer (C{"Unauthorized"}), or "".
    @ivar lost: why the connection was lost, when it was lost (a TLS error, a drop)
        rather than refused by the server.
    """

    def __init__(self, status: int | None, reason: str, statusReason: str = "", lost: Failure | None = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.statusReason = statusReason
        self.lost = lost

    def __str__(self) -> str:
        if self.status is not None:
            return f"handshake refused with HTTP {self.status} ({self.reason})"
        return f"handshake failed ({self.reason})"


class LinkOwner:
    """
    The stage logic on the other end of a link (the publisher's forwarder, the
    subscriber's reader).  It knows the open link, if any, in C{_link}.
    """

    log = Logger()
    _link: LinkProtocol | None = None

    @property
    def linked(self) -> bool:
        """
        Whether the link to msgqueue is open now.
        """
        return self._link is not None and self._link.isOpen

    def linkOpened(self, link: LinkProtocol) -> None:
        self._link = link

    def linkReceived(self, link: LinkProtocol, payload: bytes, isBinary: bool) -> None:
        raise NotImplementedError

    def linkClosed(self, link: LinkProtocol) -> None:
        if self._link is link:
            self._link = None

    def linkStopping(self, link: LinkProtocol) -> None:
        """
        The stage is stopping and the link closes next: the last chance to send.
        """

    def unexpectedFrame(self, payload: bytes) -> None:
        """
        Log a frame from msgqueue this stage cannot read (never fatal).
        """
        self.log.error("unexpected frame from msgqueue: {frame!r}", frame=payload[:200])


# Autobahn's WebSocketAdapterProtocol and WebSocketProtocol annotate peer and
# _transport_details differently (as in Autobahn's own protocol classes).
class ClientConnection(StageConnection, WebSocketClientProtocol):  # type: ignore[misc]
    """
    The client side of a wsqueue WebSocket: a link to msgqueue (L{LinkProtocol}), or
    C{wsqueue-client}'s connection to a publisher or subscriber.

    Subclasses override the hooks L{frameReceived}, L{connectionOpened},
    L{handshakeFailed} and L{connectionClosed}.

    @ivar opened: fires with the protocol once the WebSocket is open, or fails with
        L{HandshakeFailed}; cancelling it abandons the connection.
    @ivar closed: fires with C{(code, reason)} once the connection is gone (code
        L{None} if no close frame came); Autobahn's C{wasClean} then says whether
        the closing handshake completed.
    """

    # The client side: a server's frames come unmasked, ours go masked (RFC 6455, 5.3).
    peerMasks = False

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[ClientConnection] = Deferred(lambda _: self._abandon())
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self._lostReason: Failure | None = None
        self._refusal = ""

    # -- hooks -------------------------------------------------------------------

    def frameReceived(self, payload: bytes, isBinary: bool) -> None:
        """A whole message arrived."""

    def connectionOpened(self) -> None:
        """The WebSocket is open (L{opened} has fired)."""

    def handshakeFailed(self, failure: HandshakeFailed) -> None:
        """The WebSocket did not open (L{opened} fails with C{failure} next)."""

    def connectionClosed(self, code: int | None, reason: str | None) -> None:
        """The open WebSocket is gone."""

    # -- Autobahn's callbacks ---------------------------------------------------

    def _abandon(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lostReason = reason
        super().connectionLost(reason)
        cancelCloseHandshakeTimer(self)

    def failHandshake(self, reason: str) -> None:
        # Autobahn aborts the connection next, and that abort is all the reason
        # connectionLost would give: keep the real one.
        self._refusal = reason
        super().failHandshake(reason)

    def onOpen(self) -> None:
        self.opened.callback(self)
        self.connectionOpened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frameReceived(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            failure = self.handshakeFailure(reason)
            self.handshakeFailed(failure)
            self.opened.errback(failure)
        else:
            self.connectionClosed(code, reason)
        self.closed.callback((code, reason))

    def handshakeFailure(self, reason: str | None = None) -> HandshakeFailed:
        """
        Why the WebSocket did not open: the server's HTTP answer if it gave one,
        else why the connection was lost (C{reason} is Autobahn's).
        """
        statusLine = (handshakeStatusLine(self) or "").split(None, 2)
        status: int | None = None
        if len(statusLine) >= 2 and statusLine[1].isdigit():
            status = int(statusLine[1])
        statusReason = statusLine[2] if status is not None and len(statusLine) == 3 else ""
        lost = self._lostReason if self._lostReason is not None and not self._refusal else None
        return HandshakeFailed(status, self._refusal or self._why(reason), statusReason, lost)

    def _why(self, reason: str | None) -> str:
        if self._lostReason is not None and self._lostReason.value is not None:
            lost = self._lostReason.getErrorMessage()
            if "ConnectionDone" not in lost and "closed cleanly" not in lost:
                return lost
        return reason or notCleanReason(self) or "connection closed"


class LinkProtocol(ClientConnection):
    """
    The client side of a link; reports to the L{QueueLink} that made it.
    """

    def connectionOpened(self) -> None:
        self.factory.link._opened(self)

    def frameReceived(self, payload: bytes, isBinary: bool) -> None:
        try:
            self.factory.link.owner.linkReceived(self, payload, isBinary)
        except Exception:  # noqa: BLE001 -- a bug must not break the link
            self.eventLog.failure("handling a frame from msgqueue failed")

    def handshakeFailed(self, failure: HandshakeFailed) -> None:
        self.factory.link._handshakeFailed(failure)
        # The link has reported it: nobody else waits on this attempt.
        self.opened.addErrback(lambda _: None)

    def connectionClosed(self, code: int | None, reason: str | None) -> None:
        self.factory.link._closed(self, code, reason)


@dataclass(frozen=True)
class QueueTarget:
    """
    One msgqueue a link may connect to: the URL of its endpoint (path and query
    included) and how to reach it.
    """

    endpoint: IStreamClientEndpoint
    url: str


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """
    Connects to the link's current msgqueue (L{QueueLink.target}) and logs why an
    attempt failed (L{ClientService} only says it will retry).
    """

    def __init__(self, link: QueueLink) -> None:
        self._link = link

    def connect(self, factory):
        target = self._link.target
        _aimAt(factory, target.url)
        d = target.endpoint.connect(factory)
        d.addErrback(self._link._attemptFailed)
        return d


def _aimAt(factory: WebSocketClientFactory, url: str) -> None:
    """
    Make C{factory}'s next connection open the WebSocket at C{url} (its Host
    header, path and query), keeping every other session parameter.
    """
    if factory.url != url:
        factory.setSessionParameters(
            url, origin=factory.origin, protocols=factory.protocols, useragent=factory.useragent,
            headers=factory.headers, proxy=factory.proxy,
        )


class LinkObserver(Protocol):
    """
    What else wants to know when a link opens and closes (the daemon's
    L{wsqueue.readiness.ReadyFile}).
    """

    def linkOpened(self, url: str) -> None: ...

    def linkClosed(self, url: str) -> None: ...


class LinkFactory(WebSocketClientFactory):
    """
    The factory of a L{QueueLink}'s connections, which report to it.
    """

    link: QueueLink


class QueueLink(Service):
    """
    A WebSocket to msgqueue that reconnects by itself.

    Given C{alternatives} (more msgqueue daemons serving the same queue, on a
    shared store), it keeps one link, to the first it can reach: an attempt that
    fails, a handshake that is refused and a link that is lost each make it try
    the next one in order next time (round the list, with the usual backoff).

    @ivar protocol: the open link, or L{None} while msgqueue is away.
    @ivar targets: the msgqueue daemons it may link to, in the order it tries them.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        endpoint: IStreamClientEndpoint,
        url: str,
        user: str,
        password: str,
        owner: LinkOwner,
        limits: Limits,
        retryPolicy: RetryPolicy | None = None,
        startDelay: float = 0.0,
        observer: LinkObserver | None = None,
        alternatives: Sequence[QueueTarget] = (),
    ) -> None:
        self.targets = [QueueTarget(endpoint, url), *alternatives]
        self._current = 0
        self.observer = observer
        self.reactor = reactor
        self.startDelay = startDelay
        self._delayedStart = None
        self.owner = owner
        self.protocol: LinkProtocol | None = None
        self.failedHandshakes = 0
        self.failedAttempts = 0
        self._failures = RepeatSummary(self.log, reactor, interval=FAILURE_SUMMARY_INTERVAL, level=LogLevel.warn)
        factory = LinkFactory(url, headers={"Authorization": basicHeader(user, password)}, reactor=reactor)
        factory.noisy = False
        factory.protocol = LinkProtocol
        factory.link = self
        applyLimits(factory, limits.internal())
        self.factory = factory
        policy = retryPolicy or defaultRetryPolicy()
        # Quiet: the link logs its failures itself, summarised, instead of one more
        # line per attempt forever (tests.test_link checks on a real retry).
        self._client = QuietClientService(
            _ReportingEndpoint(self),
            factory,
            retryPolicy=lambda attempt: policy(attempt + self.failedHandshakes),
            clock=reactor,
        )

    @property
    def target(self) -> QueueTarget:
        """
        The msgqueue this link is (or will next be) connected to.
        """
        return self.targets[self._current]

    @property
    def url(self) -> str:
        return self.target.url

    def _moveOn(self) -> None:
        """
        Try the next msgqueue next time (round the list), if there are several.
        """
        if len(self.targets) > 1 and self.running:
            self._current = (self._current + 1) % len(self.targets)
            self.log.info("trying msgqueue at {url} next", url=self.url)

    def _attemptFailed(self, failure: Failure) -> Failure:
        if not self.running:
            return failure  # an attempt cancelled by our own stop
        self.failedAttempts += 1
        self._failures.emit("cannot reach msgqueue at {url}: {reason}; retrying", url=self.url,
                            reason=failure.getErrorMessage())
        self._moveOn()
        return failure

    def _handshakeFailed(self, failure: HandshakeFailed) -> None:
        self.failedHandshakes += 1
        self.failedAttempts += 1
        if failure.status == 401:
            self._failures.emit(
                "msgqueue at {url} refused our credentials (HTTP 401): set --queue-user and "
                "--queue-password (or WSQUEUE_QUEUE_USER / WSQUEUE_QUEUE_PASSWORD)",
                url=self.url, level=LogLevel.critical,
            )
        else:
            self._failures.emit("cannot open the link to msgqueue at {url}: {reason}; retrying", url=self.url,
                                reason=str(failure))
        self._moveOn()

    def _opened(self, protocol: LinkProtocol) -> None:
        self.failedHandshakes = 0
        self.protocol = protocol
        if self.failedAttempts:
            self._failures.flush()
            self.log.info("link to msgqueue at {url} open (after {failed} failed attempt(s))", url=self.url,
                          failed=self.failedAttempts)
            self.failedAttempts = 0
        else:
            self.log.info("link to msgqueue at {url} open", url=self.url)
        if self.observer is not None:
            self.observer.linkOpened(self.url)
        self.owner.linkOpened(protocol)

    def _closed(self, protocol: LinkProtocol, code: int | None, reason: str | None) -> None:
        if self.protocol is protocol:
            self.protocol = None
        self.log.info(
            "link to msgqueue at {url} closed (code {code}{reason})",
            url=self.url, code=code, reason=f", {reason}" if reason else "",
        )
        if self.observer is not None:
            self.observer.linkClosed(self.url)
        self.owner.linkClosed(protocol)
        self._moveOn()

    def startService(self) -> None:
        super().startService()
        if self.startDelay > 0:
            self.log.info("waiting {delay} s before reading msgqueue", delay=self.startDelay)
            self._delayedStart = self.reactor.callLater(self.startDelay, self._client.startService)
        else:
            self._client.startService()

    def stopService(self) -> Deferred:
        super().stopService()
        self._failures.flush()
        if self._delayedStart is not None and self._delayedStart.active():
            self._delayedStart.cancel()
            return succeed(None)
        protocol = self.protocol
        if protocol is None or not protocol.isOpen:
            return self._client.stopService()
        self.owner.linkStopping(protocol)
        closeWith(protocol, GOING_AWAY, "stage shutting down")
        return protocol.closed.addCallback(lambda _: self._client.stopService())
