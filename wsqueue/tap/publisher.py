# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-publisher}: clients publish here; messages go on to msgqueue.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.application.service import MultiService

from wsqueue.options import (
    LinkedServerOptions,
    OptionTable,
    PublicOptions,
    _nonNegativeFloat,
    _nonNegativeInt,
    _positiveInt,
)
from wsqueue.publisher import BATCH_BYTES, Forwarder, makePublisherFactory
from wsqueue.tap._common import CallOnStop, StopInOrder, daemonService, linkedStageService, servePublicWeb
from wsqueue.web.publish import PublishResource


class Options(LinkedServerOptions, PublicOptions):
    synopsis = "[options]"
    longdesc = "publisher: clients publish {\"Topic\": t, \"Content\": c} on /publish; messages are forwarded to msgqueue."
    defaultPort = 8081
    optParameters: OptionTable = [
        ["max-buffered", None, 10_000, "Messages held for msgqueue before publishing clients are paused.", _positiveInt],
        ["max-publish-rate", None, 0.0, ("Messages per second one connection may publish; past it (and its "
                                         "--publish-burst) it is closed with 1008 [default: 0, no limit]."),
         _nonNegativeFloat],
        ["publish-burst", None, 0, ("Messages above --max-publish-rate one connection may send at once "
                                    "[default: one second's worth]."), _nonNegativeInt],
    ]


def buildPublisher(
    options: Options, reactor, port: int | None = None, retryPolicy=None, listen: Sequence[str] | None = None
) -> StopInOrder:
    """
    The publisher's services: its listeners and its link to msgqueue.
    """
    forwarder = Forwarder(
        reactor, maxBuffered=options["max-buffered"], batchBytes=min(BATCH_BYTES, options["max-message-size"]),
        pauseLimit=options["ping-interval"] / 2,
    )
    path = f"/pushmsg?producer={forwarder.producerName}"
    service = linkedStageService(
        options, reactor, forwarder, makePublisherFactory, path, port, retryPolicy, stage="publisher", listen=listen
    )
    servePublicWeb(options, reactor, service, lambda access: {
        b"publish": PublishResource(
            access, forwarder, reactor, timeout=options["ping-interval"] / 2, acl=service.factory.acl
        ),
    })
    # Stopped first: refuse new messages, and wait for msgqueue to acknowledge the rest.
    CallOnStop(forwarder.drain).setServiceParent(service)
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-publisher", options, reactor, lambda reactor: buildPublisher(options, reactor))
