"""
What the daemons' C{makeService} functions share.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger, jsonFileLogObserver
from twisted.web.resource import Resource
from zope.interface import implementer

from wsqueue._compat import raiseListenErrors
from wsqueue.access import Access
from wsqueue.acl import ACLFile
from wsqueue.metrics import metricsSite
from wsqueue.options import StartupError, buildACL, buildAuthenticator, buildLink, buildMetrics, buildSignIn
from wsqueue.readiness import ReadyFile, readyFileOf
from wsqueue.server import ConnectionCloser, RevokeChangedCredentials, StageServerFactory
from wsqueue.tap._listen import Listener, describeAddress, listenersOf
from wsqueue.tls import TLSConfigurationError
from wsqueue.web.account import LoginResource, LogoutResource, SessionResource, TicketResource
from wsqueue.web.site import Root, StageSite

if TYPE_CHECKING:
    from wsqueue.broker import QueueBroker
    from wsqueue.link import LinkOwner, QueueLink

log = Logger()


def defaultReactor(reactor):
    """
    The given reactor, else the global one.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor


@contextmanager
def startupErrors(tapname: str) -> Iterator[None]:
    """
    Turn a configuration problem into one line and a non-zero exit, not a traceback.
    """
    try:
        yield
    except (StartupError, TLSConfigurationError) as e:
        raise SystemExit(f"{tapname}: {e}")


def daemonService(tapname: str, options, reactor, build: Callable[[object], StopInOrder]) -> StopInOrder:
    """
    The service a plugin's C{makeService} returns: what C{build(reactor)} makes, with
    configuration errors as one line, SIGTERM as a clean stop with status 0, a stop
    bounded by C{--shutdown-timeout}, the C{--metrics-port} listener (stopped first)
    and the C{--log-format json} observer.
    """
    reactor = defaultReactor(reactor)
    raiseOpenFileLimit()
    with startupErrors(tapname):
        service = build(reactor)
    metrics = getattr(options, "metrics", None)
    if metrics is not None:
        listener = _Listening()
        listener.where = f"tcp:{options['metrics-port']}"
        site = metricsSite(metrics, readyFileOf(options), reactor)
        endpoint = TCP4ServerEndpoint(reactor, options["metrics-port"], interface=options["metrics-interface"])
        raiseListenErrors(StreamServerEndpointService(endpoint, site)).setServiceParent(listener)
        listener.setServiceParent(service)
    ExitCleanlyOnSigterm(reactor).setServiceParent(service)
    service.shutdownTimeout = (reactor, options["shutdown-timeout"])
    if options.get("log-format") == "json":
        service.logObserver = jsonLogObserver()
    return service


OPEN_FILES_WANTED = 16_384
"""Enough descriptors for 10,000 clients and more; each connection takes one."""
UNLIMITED_OPEN_FILES = 65_536


def jsonLogObserver(out=None):
    """
    One JSON object per event, one per line, on C{out} (standard output): Twisted's
    own event serialisation (C{twisted.logger.jsonFileLogObserver}), every field
    of the event included (a connection's C{user}, C{address}, C{endpoint}); wsqueue
    never puts a password, ticket or cookie in an event.
    """
    return jsonFileLogObserver(out if out is not None else sys.stdout, recordSeparator="")


def raiseOpenFileLimit(getrlimit=resource.getrlimit, setrlimit=resource.setrlimit) -> int:
    """
    Raise this process's soft limit on open files as far as its hard limit allows
    (many systems start daemons at 1,024, which caps the connections a daemon can
    hold); return the limit now in force, and warn when it stays low.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    # An "unlimited" hard limit still has a ceiling (Linux's fs.nr_open, macOS's
    # OPEN_MAX): ask for a generous finite number then.
    wanted = UNLIMITED_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError) as e:
            log.warn("could not raise the open-file limit from {soft}: {error}", soft=soft, error=e)
    if soft < OPEN_FILES_WANTED:
        log.warn(
            "open-file limit is {soft}, so this daemon can hold about that many connections; "
            "raise the hard limit (ulimit -Hn, or LimitNOFILE= under systemd) for more",
            soft=soft,
        )
    return soft


class ExitCleanlyOnSigterm(Service):
    """
    Makes SIGTERM the ordinary way to stop a daemon: the reactor stops every service
    (connections close with 1001) and the process exits with status 0.

    Left to itself, twistd re-raises SIGTERM once it has shut down, so the process
    ends "killed by SIGTERM" (status 143 in a shell), which supervisors and scripts
    read as a failure.  This handler replaces the reactor's once it is running.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, number: int, frame: object) -> None:
        log.info("received SIGTERM: closing connections and exiting")
        self.reactor.callFromThread(self.reactor.stop)


class _Listening(MultiService):
    """
    A stage's listeners; one that cannot listen (a port in use, a UNIX socket's
    folder missing, an inherited descriptor that is no socket) stops start-up with
    one line, not a traceback.

    @ivar where: the listeners' descriptions, for a failure that names no address.
    """

    where = "?"

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(f"wsqueue: cannot listen on {_failedAddress(e)}: {e.socketError}")
        except OSError as e:
            raise SystemExit(f"wsqueue: cannot listen on {self.where}: {e.strerror or e}")


def _failedAddress(error: CannotListenError) -> str:
    """
    The address a L{CannotListenError} names: C{interface:port}, or C{unix:PATH}
    (Twisted gives a UNIX socket's path as the port, and no interface).
    """
    if isinstance(error.port, (str, bytes)):
        return f"unix:{os.fsdecode(error.port)}"
    return f"{error.interface or '*'}:{error.port}"


class CallOnStop(Service):
    """
    Calls C{f} when the daemon starts stopping (added last to a L{StopInOrder}, it
    is stopped first); the stop waits for what C{f} returns, if it is a Deferred.
    """

    def __init__(self, f: Callable[[], object]) -> None:
        self.f = f

    def stopService(self) -> object:
        super().stopService()
        return self.f()


class StopInOrder(MultiService):
    """
    A MultiService that stops its children one after another, the last added first,
    each once the one before has finished (MultiService stops them all at once):
    a publisher drains what it holds before it closes its connections, msgqueue
    closes its connections before it closes its store.

    @ivar shutdownTimeout: L{None}, or C{(clock, seconds)}: a stop that takes longer
        is logged and reported finished, so the process exits anyway.
    """

    shutdownTimeout: tuple | None = None
    logObserver = None
    """The daemon's log observer (C{--log-format json}), or L{None} for twistd's own."""

    def setServiceParent(self, parent) -> None:
        # twistd makes the application, sets this service under it, and only then
        # starts logging, with the application's ILogObserver component if it has one
        # (twisted.application.app.AppLogger.start): the documented way for a
        # plugin to choose its log observer.
        if self.logObserver is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)
    # A stage's parts, kept on its service by the functions that build it, for tests
    # to inspect: msgqueue's broker and server factory; a linked stage's owner of the
    # link, server factory and link.
    broker: QueueBroker
    factory: StageServerFactory
    owner: LinkOwner
    link: QueueLink

    def stopService(self) -> Deferred:
        Service.stopService(self)
        d = succeed(None)
        for child in reversed(list(self)):
            d.addBoth(lambda _, child: child.stopService(), child)
        if self.shutdownTimeout is None:
            return d
        clock, seconds = self.shutdownTimeout
        finished: Deferred[None] = Deferred()

        def late() -> None:
            log.warn("shutdown did not finish within {seconds} s; stopping anyway", seconds=seconds)
            finished.callback(None)

        timer = clock.callLater(seconds, late)

        def done(result: object) -> None:
            if timer.active():
                timer.cancel()
                finished.callback(None)

        d.addBoth(done)
        return finished


@implementer(IStreamServerEndpoint)
class _AnnouncedEndpoint:
    """
    Logs once, when listening has begun, what listens where: the stage, its
    address (the real port, also for port 0; C{ws://} without TLS, a UNIX socket's
    path) and its paths; and tells the daemon's L{ReadyFile}.
    """

    def __init__(self, listener: Listener, stage: str, paths: list[str], ready: ReadyFile) -> None:
        self._listener = listener
        self._stage = stage
        self._paths = paths
        self._ready = ready
        ready.expectListener()

    def listen(self, factory: IProtocolFactory) -> Deferred:
        return self._listener.endpoint.listen(factory).addCallback(self._announce)

    def _announce(self, port):
        # Any endpoint's "port": an IListeningPort, or what a plugin's gives.
        secure = self._listener.secure
        where, fields = describeAddress(port.getHost(), secure)
        log.info(
            "{stage} listening on {where} ({paths})",
            stage=self._stage, where=where, paths=", ".join(self._paths), tls=secure, **fields,
        )
        self._ready.listening(self._stage, **fields, tls=secure)
        return port


def listeningService(
    factory: StageServerFactory, listeners: Sequence[Listener], stage: str = "wsqueue", ready: ReadyFile | None = None
) -> MultiService:
    """
    The C{listeners} (see L{listenersOf}) for C{factory} plus the service that
    closes its connections with 1001 on stop.  A listener that cannot listen
    aborts start-up.  C{ready} hears when each listens.
    """
    service = _Listening()
    service.where = ", ".join(listener.description for listener in listeners)
    ready = ready or ReadyFile(None)
    for listener in listeners:
        endpoint = _AnnouncedEndpoint(listener, stage, sorted(factory.routes), ready)
        # Raising as strports.service does, so that _Listening sees the error.
        raiseListenErrors(StreamServerEndpointService(endpoint, factory)).setServiceParent(service)
    ConnectionCloser(factory).setServiceParent(service)
    return service


def linkedStageService(
    options, reactor, owner, makeFactory, path: str, port: int | None = None, retryPolicy=None, startDelay: float = 0.0,
    stage: str = "wsqueue", listen: Sequence[str] | None = None,
) -> StopInOrder:
    """
    A stage that listens and keeps a link to msgqueue at C{path} (publisher,
    subscriber); C{owner} is its side of the link, C{makeFactory} builds its server.
    C{port} and C{listen} override C{--port} and C{--listen} (see L{listenersOf}).
    """
    factory = makeFactory(owner, buildAuthenticator(options, reactor, log), options.limits(), reactor)
    factory.permittedOrigins = frozenset(options["allowed-origins"])
    metrics = buildMetrics(options)
    if metrics is not None:
        metrics.addServer(factory)
        metrics.addLink(stage, owner)
    link = buildLink(options, reactor, path, owner, log, retryPolicy, startDelay)
    listeners = listenersOf(options, reactor, stage, port, listen)
    service = StopInOrder()
    # Stopped in reverse: the link first, while every client is still connected, so
    # that a subscriber acknowledges only what it wrote to a client (what arrives
    # from msgqueue after that is left unacknowledged, for the next subscriber), and
    # a publisher's last acknowledgements still reach its clients; then the clients.
    listeningService(factory, listeners, stage, readyFileOf(options)).setServiceParent(service)
    RevokeChangedCredentials(factory, reactor).setServiceParent(service)
    link.setServiceParent(service)
    service.owner = owner
    service.factory = factory
    service.link = link
    return service


class WatchACL(Service):
    """
    Re-reads the ACL file while the daemon runs (L{ACLFile.start}).
    """

    def __init__(self, aclFile: ACLFile) -> None:
        self.aclFile = aclFile

    def startService(self) -> None:
        super().startService()
        self.aclFile.start()

    def stopService(self) -> None:
        super().stopService()
        self.aclFile.stop()


def servePublicWeb(
    options, reactor, service: StopInOrder, routes: Callable[[Access], Mapping[bytes, Resource]]
) -> Access:
    """
    Give a public daemon (publisher, subscriber) its topic permissions (C{--acl}),
    browser sign-in and its HTTP side: tickets and session cookies accepted on its
    WebSockets, and a site for plain HTTP requests on the same port with
    C{/login}, C{/logout}, C{/session}, C{/ticket} and the stage's own
    C{routes(access)}.
    """
    factory = service.factory
    factory.acl = buildACL(options, reactor, log)
    if factory.acl is not None:
        WatchACL(factory.acl).setServiceParent(service)
    tickets, sessions = buildSignIn(options, reactor, log)
    access = Access(factory.authenticator, factory.allowsOrigin, tickets, sessions)
    access.stats = factory.stats
    factory.access = access
    children = {
        b"login": LoginResource(access, sessions),
        b"logout": LogoutResource(access, sessions),
        b"session": SessionResource(access),
        b"ticket": TicketResource(access, tickets),
        **routes(access),
    }
    factory.site = StageSite(Root(children), reactor, options["max-message-size"])
    return access
