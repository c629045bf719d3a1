# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-subscriber}: clients subscribe here to topics read from msgqueue.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.application.service import MultiService
from twisted.python import usage

from wsqueue import wire
from wsqueue.options import LinkedServerOptions, defaultGroup
from wsqueue.subscriber import QueueReader, TopicRegistry, makeSubscriberFactory
from wsqueue.tap._common import daemonService, linkedStageService


class Options(LinkedServerOptions):
    synopsis = "[options]"
    longdesc = "subscriber: clients subscribe to topics on /subscribe and receive the messages read from msgqueue."
    defaultPort = 8082
    optParameters = [
        ["group", None, None, "Consumer group on msgqueue [default: subscriber-<host>-<port>, stable across restarts]."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["group"] is None:
            self["group"] = defaultGroup(self["port"])
        problem = wire.checkTopic(self["group"])
        if problem is not None:
            raise usage.UsageError("--group: " + problem.removeprefix("Topic "))


def buildSubscriber(options: Options, reactor, port: int | None = None, retryPolicy=None) -> MultiService:
    """
    The subscriber's services: its listener and its link to msgqueue.
    """
    path = f"/popmsg?group={quote(options['group'], safe='')}&ack=explicit"
    reader = QueueReader(TopicRegistry(), reactor)
    return linkedStageService(options, reactor, reader, makeSubscriberFactory, path, port, retryPolicy)


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-subscriber", reactor, lambda reactor: buildSubscriber(options, reactor))
