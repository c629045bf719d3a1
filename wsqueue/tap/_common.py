"""
What the daemons' C{makeService} functions share.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.logger import Logger

from wsqueue.options import StartupError, buildAuthenticator, buildLink
from wsqueue.server import ConnectionCloser, StageServerFactory
from wsqueue.tls import TLSConfigurationError, serverDescription

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


def listeningService(factory: StageServerFactory, port: int, interface: str, certDir: str, reactor) -> MultiService:
    """
    A TLS listener for C{factory} plus the service that closes its connections with
    1001 on stop.  C{strports} makes a port in use abort start-up.
    """
    service = MultiService()
    strports.service(serverDescription(port, interface, certDir), factory, reactor=reactor).setServiceParent(service)
    ConnectionCloser(factory).setServiceParent(service)
    return service


def linkedStageService(
    options, reactor, owner, makeFactory, path: str, port: int | None = None, retryPolicy=None
) -> MultiService:
    """
    A stage that listens and keeps a link to msgqueue at C{path} (publisher,
    subscriber); C{owner} is its side of the link, C{makeFactory} builds its server.
    """
    factory = makeFactory(owner, buildAuthenticator(options, reactor, log), options.limits(), reactor)
    link = buildLink(options, reactor, path, owner, log, retryPolicy)
    service = listeningService(factory, options["port"] if port is None else port, options["interface"], options["cert-dir"], reactor)
    link.setServiceParent(service)
    service.owner = owner
    service.factory = factory
    service.link = link
    return service
