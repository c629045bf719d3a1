# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-msgqueue}: the queue daemon.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.logger import Logger

from wsqueue.broker import QueueBroker
from wsqueue.msgqueue import makeMsgQueueFactory
from wsqueue.options import ServerOptions, _positiveInt, buildAuthenticator
from wsqueue.store.memory import MemoryStore
from wsqueue.tap._common import daemonService, listeningService

log = Logger()


class Options(ServerOptions):
    synopsis = "[options]"
    longdesc = "msgqueue: a FIFO queue with consumer groups; publishers push on /pushmsg, subscribers pop on /popmsg."
    defaultPort = 8080
    optParameters = [
        ["max-queued", None, 100_000, "Messages held before pushers are paused (flow control; nothing is dropped).", _positiveInt],
        ["max-in-flight", None, 1000, "Unacknowledged messages per ack=explicit consumer.", _positiveInt],
    ]


def buildMsgQueue(options: Options, reactor, port: int | None = None) -> MultiService:
    """
    msgqueue's services: its listener over a broker and an in-memory store.
    """
    broker = QueueBroker(MemoryStore(), reactor, maxQueued=options["max-queued"], maxInFlight=options["max-in-flight"])
    factory = makeMsgQueueFactory(broker, buildAuthenticator(options, reactor, log), options.limits(), reactor)
    service = listeningService(factory, options["port"] if port is None else port, options["interface"], options["cert-dir"], reactor)
    service.broker = broker
    service.factory = factory
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-msgqueue", reactor, lambda reactor: buildMsgQueue(options, reactor))
