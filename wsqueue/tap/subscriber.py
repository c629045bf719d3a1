# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-subscriber}: clients subscribe here to topics read from msgqueue.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from wsqueue import wire
from wsqueue.options import LinkOptions, ServerOptions, buildAuthenticator, buildLink, defaultGroup
from wsqueue.subscriber import QueueReader, TopicRegistry, makeSubscriberFactory
from wsqueue.tap._common import defaultReactor, listeningService, startupErrors

log = Logger()


class Options(ServerOptions, LinkOptions):
    synopsis = "[options]"
    longdesc = "subscriber: clients subscribe to topics on /subscribe and receive the messages read from msgqueue."
    defaultPort = 8082
    optParameters = [
        ["group", None, None, "Consumer group on msgqueue [default: subscriber-<host>-<port>, stable across restarts]."],
    ]

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        LinkOptions.postOptions(self)
        if self["group"] is None:
            self["group"] = defaultGroup(self["port"])
        problem = wire.checkTopic(self["group"])
        if problem is not None:
            raise usage.UsageError("--group: " + problem.removeprefix("Topic "))


def buildSubscriber(options: Options, reactor, port: int | None = None, retryPolicy=None) -> MultiService:
    """
    The subscriber's services: its listener and its link to msgqueue.
    """
    reader = QueueReader(TopicRegistry(), reactor)
    factory = makeSubscriberFactory(reader, buildAuthenticator(options, reactor, log), options.limits(), reactor)
    path = f"/popmsg?group={quote(options['group'], safe='')}&ack=explicit"
    link = buildLink(options, reactor, path, reader, log, retryPolicy)
    service = listeningService(factory, options["port"] if port is None else port, options["interface"], options["cert-dir"], reactor)
    link.setServiceParent(service)
    service.reader = reader
    service.factory = factory
    service.link = link
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    with startupErrors("wsqueue-subscriber"):
        return buildSubscriber(options, defaultReactor(reactor))
