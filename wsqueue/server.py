# -*- test-case-name: tests.test_server -*-
"""
What every wsqueue WebSocket server shares: routing by path, Basic auth during the
opening handshake, errors as frames instead of tracebacks, connection logging, and
closing every connection with 1001 when the daemon stops.

Each endpoint (C{/pushmsg}, C{/popmsg}, C{/publish}, C{/subscribe}) is an
L{EndpointHandler} subclass; the protocol creates one per connection after the
client has authenticated (L{wsqueue.access}: Basic, a ticket or a session cookie).

The public daemons also answer plain HTTP on the same port (C{POST /ticket},
C{/login}, C{POST /publish}, the console at C{/}): a request that is not a
WebSocket handshake is handed, with the bytes read so far, to a twisted.web site
(L{StageServerFactory.site}).  WebSockets stay on Autobahn's protocol from the
first byte, so they cost nothing more than before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.application.service import Service
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from wsqueue import _compat, frames
from wsqueue._compat import unsentBytes
from wsqueue.access import Access, Forbidden, hostName
from wsqueue.acl import ACLFile
from wsqueue.auth import UNAUTHORIZED_HEADERS, BasicAuthenticator
from wsqueue.connection import (
    GOING_AWAY,
    MAX_PEER_BUFFER,
    POLICY_VIOLATION,
    Limits,
    ServerStats,
    StageConnection,
    applyLimits,
    closeWith,
)
from wsqueue.throttle import Throttled
from wsqueue.wire import WireError


class EndpointHandler:
    """
    One connection to one endpoint, after authentication.  Subclasses override the
    hooks; the protocol guarantees L{closed} is called once if L{opened} was.
    """

    log = Logger()

    def __init__(self, connection: StageServerProtocol, request: ConnectionRequest) -> None:
        self.connection = connection

    def opened(self) -> None:
        """The WebSocket is open."""

    def received(self, payload: bytes, isBinary: bool) -> None:
        """A whole message arrived."""

    def closed(self) -> None:
        """The connection is gone."""


Route = Callable[["StageServerProtocol", ConnectionRequest], EndpointHandler]


class PausableReading(frames.AutobahnConnection):
    """
    For an Autobahn WebSocket protocol (listed before it among the bases): stop and
    start reading from the peer (flow control) without dropping it for pings it
    cannot answer meanwhile.

    Autobahn's auto-ping drops a peer whose pong does not arrive within
    C{autoPingTimeout}; while the transport does not read, no pong can arrive, so
    a peer paused for longer than that would be dropped for our own pause.  The
    pings are suspended while reading is paused and start again, one interval
    after the resume, when it resumes.  Autobahn has no public interface for this:
    L{wsqueue._compat.suspendAutoPing} and L{wsqueue._compat.restartAutoPing} are the
    only code that touches its auto-ping state.
    """

    readingPaused: bool = False

    def pauseReading(self) -> None:
        """
        Stop reading from the peer (C{transport.pauseProducing()}) and suspend the
        ping timeout until L{resumeReading}.  Pausing twice is pausing once.
        """
        if self.readingPaused or self.transport is None:
            return
        self.readingPaused = True
        self.transport.pauseProducing()
        _compat.suspendAutoPing(self)

    def resumeReading(self) -> None:
        """
        Read from the peer again and ping it again, a ping interval from now.
        """
        if not self.readingPaused or self.transport is None:
            return
        self.readingPaused = False
        self.transport.resumeProducing()
        _compat.restartAutoPing(self)


# Autobahn's WebSocketAdapterProtocol and WebSocketProtocol annotate peer and
# _transport_details differently (as in Autobahn's own protocol classes).
class StageServerProtocol(PausableReading, StageConnection, WebSocketServerProtocol):  # type: ignore[misc]
    """
    A server connection: authenticates, routes to an L{EndpointHandler}, and keeps
    every failure inside the connection as an C{{"Error": ...}} frame.

    Everything written to the peer passes one check (L{_admits}): Autobahn's own
    writes (pongs, which it sends for every ping it reads, close frames, messages)
    through L{sendData}, and wsqueue's through L{sendFrames}.  A peer that would
    have more than L{Limits.maxPeerBuffer} bytes waiting is closed as a slow
    consumer (1008, logged once), and nothing more is queued for it; Autobahn's
    closing handshake timeout (C{CLOSE_TIMEOUT}, see L{applyLimits}) then aborts
    the connection (C{transport.abortConnection()}) if it does not read the close.
    Without that, a client that pings and never reads would make the server queue
    a pong per ping without bound, and one that publishes with Ids an Ack per message.
    """

    # None until onConnect has authenticated the client; read only from onOpen on,
    # which Autobahn calls after that (typed as set, so that the per-message
    # onMessage needs no check).
    handler: EndpointHandler = cast(EndpointHandler, None)
    user: str | None = None
    peerAddress: str = ""
    """The client's address, as the per-address connection limit counts it."""
    credentialStamp: str | None = None
    """The user's stored password hash when the connection was authenticated: a
    connection whose user's hash changed (or went) is closed (L{RevokeChangedCredentials})."""
    path: str = ""
    slowConsumer: bool = False
    peerBufferLimit: int = MAX_PEER_BUFFER
    """The bound L{_admits} applies: the factory's C{maxPeerBuffer}, unless the
    endpoint's handler sets its own when it is made."""
    """Closed for passing Limits.maxPeerBuffer: nothing more is written."""
    _sendingClose: bool = False
    httpChannel: IProtocol | None = None
    """The twisted.web channel this connection was handed to, if it is plain HTTP."""

    def processHandshake(self) -> None:
        # Autobahn calls this with every read until the opening handshake is done;
        # a request that is no WebSocket upgrade goes to the site, if there is one.
        site = self.factory.site
        if site is not None and isPlainHTTP(self.data):
            self._serveHTTP(site)
        else:
            super().processHandshake()

    def _serveHTTP(self, site) -> None:
        assert self.transport is not None
        channel = site.buildProtocol(self.transport.getPeer())
        self.httpChannel = channel
        _compat.cancelOpenHandshakeTimer(self)
        data = _compat.takeHandshakeData(self)
        channel.makeConnection(self.transport)
        channel.dataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        if self.httpChannel is not None:
            self.httpChannel.dataReceived(data)
        else:
            super().dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.httpChannel is not None:
            self.httpChannel.connectionLost(reason)
        super().connectionLost(reason)

    # Autobahn runs onConnect through txaio.as_future and waits for a Deferred, but
    # annotates only the synchronous results.
    def onConnect(self, request: ConnectionRequest) -> Deferred[None]:  # type: ignore[override]
        self.path = request.path
        route = self.factory.routes.get(request.path)
        if route is None:
            self.factory.stats.refuse("not_found")
            raise ConnectionDeny(404, f"no endpoint {request.path}; this server has {', '.join(sorted(self.factory.routes))}")
        access: Access = self.factory.access
        try:
            access.checkOrigin(request.headers)
        except Forbidden:
            self.factory.stats.refuse("origin")
            self.eventLog.info("refused {peer} on {path}: Origin {origin} is not allowed", peer=self.peer,
                               path=self.path, origin=request.headers["origin"][:200])
            raise ConnectionDeny(403, "Origin not allowed")
        if self.factory.unavailable is not None:
            self.factory.stats.refuse("unavailable")
            raise ConnectionDeny(503, self.factory.unavailable)
        self._checkConnectionLimits()
        tickets = request.params.get("ticket")
        d = access.authenticate(request.headers, tickets[0] if tickets else None, self.peerAddress)
        accepted: Deferred[None] = d.addCallbacks(self._authenticated, self._refused, callbackArgs=(route, request))
        return accepted.addErrback(self._handlerFailed)

    def _checkConnectionLimits(self) -> None:
        """
        Refuse (503, counted as C{limit}) a connection past C{--max-connections} or
        C{--max-connections-per-address}, before its credentials cost anything.
        """
        factory, limits = self.factory, self.factory.limits
        peer = self.transport.getPeer() if self.transport is not None else None
        self.peerAddress = str(getattr(peer, "host", ""))
        problem = None
        if limits.maxConnections and len(factory.connections) >= limits.maxConnections:
            problem = f"too many connections (at most {limits.maxConnections})"
        elif limits.maxConnectionsPerAddress and factory.byAddress.get(self.peerAddress, 0) >= limits.maxConnectionsPerAddress:
            problem = f"too many connections from this address (at most {limits.maxConnectionsPerAddress})"
        if problem is not None:
            factory.stats.refuse("limit")
            self.eventLog.info("refused {peer} on {path}: {problem}", peer=self.peer, path=self.path, problem=problem)
            raise ConnectionDeny(503, problem)

    def _authenticated(self, user: str, route: Route, request: ConnectionRequest) -> None:
        self.user = user
        stampOf = getattr(self.factory.authenticator, "stampOf", None)
        self.credentialStamp = stampOf(user) if stampOf is not None else None
        self.peerBufferLimit = self.factory.limits.maxPeerBuffer
        self.handler = route(self, request)

    def _refused(self, failure: Failure) -> Deferred[None]:
        failure.trap(UnauthorizedLogin, Forbidden, Throttled)
        stats = self.factory.stats
        if failure.check(Throttled):
            throttled: Throttled = failure.value  # type: ignore[assignment]
            stats.refuse("throttled")
            self.eventLog.info("refused {peer} on {path}: {reason}", peer=self.peer, path=self.path,
                               reason=throttled.reason)
            self.failHandshake(throttled.reason, throttled.status, [("Retry-After", str(throttled.retryAfter))])
            return Deferred()
        if failure.check(Forbidden):
            stats.refuse("origin")
            self.eventLog.info("refused {peer} on {path}: {reason}", peer=self.peer, path=self.path,
                               reason=failure.value)
            raise ConnectionDeny(403, str(failure.value))
        stats.refuse("auth")
        stats.signinFailures += 1
        # The reason names what failed (a ticket expired, a session revoked), never the secret.
        self.eventLog.info("refused {peer} on {path}: missing or wrong credentials ({reason})", peer=self.peer,
                           path=self.path, reason=str(failure.value) or "wrong password",
                           address=self.peerAddress, endpoint=self.path)
        self.failHandshake("Unauthorized", 401, UNAUTHORIZED_HEADERS)
        # The handshake has been answered: this Deferred never fires.
        return Deferred()

    def _handlerFailed(self, failure: Failure) -> Failure:
        if failure.check(ConnectionDeny):
            return failure
        self.eventLog.failure("accepting {peer} on {path} failed", failure, peer=self.peer, path=self.path)
        raise ConnectionDeny(500, "internal error")

    # What Autobahn keeps of the opening handshake and never reads once it is done.
    _HANDSHAKE_LEFTOVERS = _compat.AUTOBAHN_HANDSHAKE_LEFTOVERS

    def onOpen(self) -> None:
        _compat.forgetHandshake(self)
        self.factory.connections.add(self)
        byAddress = self.factory.byAddress
        byAddress[self.peerAddress] = byAddress.get(self.peerAddress, 0) + 1
        self.eventLog.info("{peer} ({user}) connected to {path}", peer=self.peer, user=self.user, path=self.path,
                           address=self.peerAddress, endpoint=self.path)
        self._guard(self.handler.opened)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        received = self.factory.stats.received
        received[self.path] = received.get(self.path, 0) + 1
        self._guard(self.handler.received, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self in self.factory.connections:
            self.factory.connections.discard(self)
            byAddress = self.factory.byAddress
            left = byAddress.get(self.peerAddress, 1) - 1
            if left > 0:
                byAddress[self.peerAddress] = left
            else:
                byAddress.pop(self.peerAddress, None)
            self.eventLog.info(
                "{peer} ({user}) left {path} (code {code}{reason})",
                peer=self.peer, user=self.user, path=self.path, code=code,
                reason=f", {reason}" if reason else "", address=self.peerAddress, endpoint=self.path,
            )
            self._guard(self.handler.closed)
        closing = self.factory.closing.pop(self, None)
        if closing is not None:
            closing.callback(None)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        # Autobahn answers a request without an Upgrade header with 426; the Go system
        # (and its clients' tests) expect 400 for any request that is not a WebSocket.
        if code == 426:
            code = 400
        super().failHandshake(reason, code, responseHeaders)

    def _guard(self, f, *args) -> None:
        try:
            f(*args)
        except Exception:  # noqa: BLE001 -- a bug must not reach the client as a traceback
            self.eventLog.failure("handling {path} for {peer} failed", peer=self.peer, path=self.path)
            self.send(WireError("internal error").encode())

    def sendError(self, error: WireError) -> None:
        self.factory.stats.error(error.reason)
        self.send(error.encode())

    def sendFrames(self, data: bytes) -> None:
        if self._admits(len(data)):
            super().sendFrames(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every write of Autobahn's goes through here: handshake answers, pongs,
        # close frames, messages (wsqueue._compat.AUTOBAHN_WRITE_METHOD).
        if self._admits(len(data)):
            super().sendData(data, sync, chopsize)

    def _admits(self, size: int) -> bool:
        """
        Whether C{size} more bytes may be queued for the peer.  Past the bound, the
        peer is closed as a slow consumer instead, once.
        """
        if self.slowConsumer:
            return self._sendingClose
        if self.state != self.STATE_OPEN:
            # The opening handshake's answer; frames of a closing handshake.
            return True
        waiting = unsentBytes(self)
        if waiting is None or waiting + size <= self.peerBufferLimit:
            return True
        self._closeSlowConsumer()
        return False

    def closeSlowConsumer(self) -> None:
        """
        Close the peer as a slow consumer (1008, logged once): it has more waiting
        for it than it may.
        """
        if not self.slowConsumer:
            self._closeSlowConsumer()

    def _closeSlowConsumer(self) -> None:
        self.slowConsumer = True
        self.factory.stats.slowConsumers += 1
        self.eventLog.warn(
            "closing {peer} ({user}) on {path}: slow consumer, more than {limit} bytes waiting",
            peer=self.peer, user=self.user, path=self.path, limit=self.peerBufferLimit,
        )
        self._sendingClose = True
        try:
            closeWith(self, POLICY_VIOLATION, "slow consumer")
        finally:
            self._sendingClose = False


def isPlainHTTP(data: bytes) -> bool:
    """
    Whether C{data}, the start of a connection, holds a whole HTTP request head
    that is not a WebSocket handshake (no C{Upgrade} header, or not a C{GET}).
    L{False} until the head has fully arrived.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[:end + 2].lower()
    return not head.startswith(b"get ") or b"\r\nupgrade:" not in head


class StageServerFactory(WebSocketServerFactory):
    """
    The factory of one daemon's WebSocket server.

    @ivar routes: endpoint path to the L{EndpointHandler} class that serves it.
    @ivar connections: the open connections, for shutdown and fan-out.
    @ivar unavailable: while not L{None}, why WebSockets are refused (HTTP 503):
        msgqueue listens at once, but serves only once its store is usable.
    """

    unavailable: str | None = None
    permittedOrigins: frozenset[str] = frozenset()
    """Web origins besides the daemon's own whose pages may open WebSockets
    (C{--allowed-origins}; see L{allowsOrigin})."""
    siblingPorts: frozenset[int] = frozenset()
    """Ports whose origins on the same host count as the daemon's own: the
    all-in-one's publisher and subscriber, so that its console reaches both."""
    maxSubscriptions: int = 10_000
    """Subscriptions one connection may hold (the subscriber's C{--max-subscriptions})."""
    acl: ACLFile | None = None
    """Topic permissions (C{--acl}) the endpoints apply, or L{None}: everything allowed."""
    site: Site | None = None
    """The twisted.web site that answers plain HTTP requests on the same port, or
    L{None} (msgqueue): they then get 400, as the Go system answered."""

    protocol = StageServerProtocol

    def __init__(
        self,
        routes: Mapping[str, Route],
        authenticator: BasicAuthenticator,
        limits: Limits,
        reactor,
    ) -> None:
        # Not Autobahn's default, which names its version to anyone who asks.
        super().__init__(reactor=reactor, server="wsqueue")
        self.routes = dict(routes)
        self.authenticator = authenticator
        self.stats = ServerStats()
        """What this server counts for C{--metrics-port} (L{wsqueue.metrics})."""
        self.access = Access(authenticator, self.allowsOrigin)
        self.access.stats = self.stats
        self.limits = limits
        self.connections: set[StageServerProtocol] = set()
        self.byAddress: dict[str, int] = {}
        """Open connections per client address (C{--max-connections-per-address})."""
        self.closing: dict[StageServerProtocol, Deferred[None]] = {}
        self.noisy = False  # the daemon says once what listens where (tap._common)
        applyLimits(self, limits)

    def allowsOrigin(self, origin: str, host: str) -> bool:
        """
        Whether a page from C{origin} (a browser's C{Origin} header) may open a
        WebSocket here: one of the daemon's own origins (the C{Host} the browser
        connected to, over https or http), or one of L{permittedOrigins} (C{null},
        what sandboxed and file pages send, only when listed).  Without this any
        page on any site could open a WebSocket with a browser's credentials.
        """
        origin = origin.strip().lower()
        if origin in self.permittedOrigins:
            return True
        host = host.strip().lower()
        if not host:
            return False
        hosts = [host]
        if self.siblingPorts:
            name = hostName(host)
            hosts += [f"{name}:{port}" for port in self.siblingPorts]
        return any(origin in (f"https://{each}", f"http://{each}") for each in hosts)

    def closeAll(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> Deferred:
        """
        Close every open connection with C{code}; fire when all have closed (Autobahn
        drops a peer that does not answer within its close timeout).
        """
        waiting = []
        for connection in list(self.connections):
            d = self.closing.setdefault(connection, Deferred())
            waiting.append(d)
            closeWith(connection, code, reason)
        return DeferredList(waiting)


REVOKE_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the credentials file for changes."""


class RevokeChangedCredentials(Service):
    """
    Closes (1008, "credentials revoked") the connections of users whose password
    changed, or who were removed, in the credentials file, within about
    L{REVOKE_CHECK_INTERVAL} of the change.  Without a credentials file (the demo
    account) there is nothing to watch.
    """

    log = Logger()

    def __init__(self, factory: StageServerFactory, clock) -> None:
        self.factory = factory
        self.clock = clock
        self._loop: LoopingCall | None = None
        checker = getattr(factory.authenticator, "checker", None)
        self.checker = checker if hasattr(checker, "addReloadListener") else None
        if self.checker is not None:
            self.checker.addReloadListener(self.revoke)

    def startService(self) -> None:
        super().startService()
        if self.checker is not None:
            self._loop = LoopingCall(self.checker.checkForChanges)
            self._loop.clock = self.clock
            self._loop.start(REVOKE_CHECK_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def revoke(self) -> None:
        stampOf = self.factory.authenticator.stampOf
        for connection in list(self.factory.connections):
            if connection.user is not None and stampOf(connection.user) != connection.credentialStamp:
                self.log.info("closing {peer} ({user}) on {path}: credentials revoked", peer=connection.peer,
                              user=connection.user, path=connection.path)
                closeWith(connection, POLICY_VIOLATION, "credentials revoked")


class ConnectionCloser(Service):
    """
    A service whose stop closes the factory's WebSockets with code 1001.
    """

    def __init__(self, factory: StageServerFactory) -> None:
        self.factory = factory

    def stopService(self) -> Deferred:
        super().stopService()
        return self.factory.closeAll()
