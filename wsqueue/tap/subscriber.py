# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-subscriber}: clients subscribe here to topics read from msgqueue.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from twisted.application.service import MultiService
from twisted.python import usage

from wsqueue import wire
from wsqueue.metrics import readerMetrics
from wsqueue.options import (
    LinkedServerOptions,
    OptionTable,
    PublicOptions,
    _nonNegativeFloat,
    _positiveInt,
    buildMetrics,
    defaultGroup,
    listenerName,
)
from wsqueue.subscriber import (
    DEFAULT_MAX_CLIENT_BUFFER,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    QueueReader,
    TopicRegistry,
    endForbiddenSubscriptions,
    makeSubscriberFactory,
)
from wsqueue.tap._common import StopInOrder, daemonService, linkedStageService, servePublicWeb
from wsqueue.web.console import DEFAULT_PUBLISHER_PORT, consoleRoutes
from wsqueue.web.site import WebSocketOnly


class Options(LinkedServerOptions, PublicOptions):
    synopsis = "[options]"
    longdesc = "subscriber: clients subscribe to topics on /subscribe and receive the messages read from msgqueue."
    defaultPort = 8082
    optParameters: OptionTable = [
        ["group", None, None, ("Consumer group on msgqueue [default: subscriber-<host>-<port>, stable across restarts; "
                               "with --listen, the first listener's port, or its description].")],
        ["max-subscriptions", None, MAX_SUBSCRIPTIONS_PER_CLIENT,
         "Subscriptions one connection may hold; past it a subscribe gets an Error.", _positiveInt],
        ["max-client-buffer", None, DEFAULT_MAX_CLIENT_BUFFER,
         "Bytes waiting for one client before it is closed with 1008 (slow consumer).", _positiveInt],
        ["resume-grace", None, 0.0,
         "Seconds to wait after start before reading msgqueue, so clients can subscribe again after a restart.",
         _nonNegativeFloat],
        ["publisher-url", None, None, ("The publisher's wss:// URL of /publish, where the web console at / "
                                       "publishes [default: port 8081 on the host name the page came from].")],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["group"] is None:
            self["group"] = defaultGroup(listenerName(self["port"], self["listen"]))
        problem = wire.checkTopic(self["group"])
        if problem is not None:
            raise usage.UsageError("--group: " + problem.removeprefix("Topic "))


def buildSubscriber(
    options: Options, reactor, port: int | None = None, retryPolicy=None, listen: Sequence[str] | None = None
) -> StopInOrder:
    """
    The subscriber's services: its listeners and its link to msgqueue.
    """
    path = f"/popmsg?group={quote(options['group'], safe='')}&ack=explicit&batch=1"
    reader = QueueReader(TopicRegistry(), reactor)

    def makeFactory(owner, authenticator, limits, reactor):
        return makeSubscriberFactory(owner, authenticator, limits, reactor, options["max-client-buffer"])

    service = linkedStageService(
        options, reactor, reader, makeFactory, path, port, retryPolicy, startDelay=options["resume-grace"],
        stage="subscriber", listen=listen,
    )
    publisherPort = options.get("publisher-port") or DEFAULT_PUBLISHER_PORT
    servePublicWeb(options, reactor, service, lambda access: {
        b"subscribe": WebSocketOnly("/subscribe"),
        **consoleRoutes(options["publisher-url"], publisherPort),
    })
    factory = service.factory
    factory.maxSubscriptions = options["max-subscriptions"]
    metrics = buildMetrics(options)
    if metrics is not None:
        metrics.addCollect(readerMetrics(reader))
    if factory.acl is not None:
        factory.acl.addListener(lambda acl: endForbiddenSubscriptions(factory, acl))
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-subscriber", options, reactor, lambda reactor: buildSubscriber(options, reactor))
