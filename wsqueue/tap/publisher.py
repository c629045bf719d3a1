# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-publisher}: clients publish here; messages go on to msgqueue.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.logger import Logger

from wsqueue.options import LinkOptions, ServerOptions, _positiveInt, buildAuthenticator, buildLink
from wsqueue.publisher import Forwarder, makePublisherFactory
from wsqueue.tap._common import defaultReactor, listeningService, startupErrors

log = Logger()


class Options(ServerOptions, LinkOptions):
    synopsis = "[options]"
    longdesc = "publisher: clients publish {\"Topic\": t, \"Content\": c} on /publish; messages are forwarded to msgqueue."
    defaultPort = 8081
    optParameters = [
        ["max-buffered", None, 10_000, "Messages held for msgqueue before publishing clients are paused.", _positiveInt],
    ]

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        LinkOptions.postOptions(self)


def buildPublisher(options: Options, reactor, port: int | None = None, retryPolicy=None) -> MultiService:
    """
    The publisher's services: its listener and its link to msgqueue.
    """
    forwarder = Forwarder(reactor, maxBuffered=options["max-buffered"])
    factory = makePublisherFactory(forwarder, buildAuthenticator(options, reactor, log), options.limits(), reactor)
    link = buildLink(options, reactor, f"/pushmsg?producer={forwarder.producerName}", forwarder, log, retryPolicy)
    service = listeningService(factory, options["port"] if port is None else port, options["interface"], options["cert-dir"], reactor)
    link.setServiceParent(service)
    service.forwarder = forwarder
    service.factory = factory
    service.link = link
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    with startupErrors("wsqueue-publisher"):
        return buildPublisher(options, defaultReactor(reactor))
