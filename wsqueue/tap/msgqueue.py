# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-msgqueue}: the queue daemon.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from wsqueue.broker import QueueBroker
from wsqueue.msgqueue import makeMsgQueueFactory
from wsqueue.options import ServerOptions, StartupError, _positiveInt, buildAuthenticator
from wsqueue.store.config import DEFAULT_STORE, StoreService, openStore, parseStoreSpec
from wsqueue.store.sqlite import StoreError
from wsqueue.tap._common import StopInOrder, daemonService, listeningService
from wsqueue.tls import serverDescription

log = Logger()


class Options(ServerOptions):
    synopsis = "[options]"
    longdesc = "msgqueue: a FIFO queue with consumer groups; publishers push on /pushmsg, subscribers pop on /popmsg."
    defaultPort = 8080
    optParameters = [
        ["max-queued", None, 100_000, "Messages held before pushers are paused (flow control; nothing is dropped).", _positiveInt],
        ["max-in-flight", None, 1000, "Unacknowledged messages per ack=explicit consumer.", _positiveInt],
        ["store", None, DEFAULT_STORE, "Where the queue is kept: sqlite:PATH (durable) or memory."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        try:
            parseStoreSpec(self["store"])
        except ValueError as e:
            raise usage.UsageError(str(e))


def buildMsgQueue(options: Options, reactor, port: int | None = None) -> MultiService:
    """
    msgqueue's services: its listener over a broker and its store.  The store is
    opened (and checked) once everything else is known to be usable, and closed
    after the listener has closed its connections.
    """
    authenticator = buildAuthenticator(options, reactor, log)
    description = serverDescription(options["port"] if port is None else port, options["interface"], options["cert-dir"])
    try:
        store = openStore(options["store"], reactor)
    except StoreError as e:
        raise StartupError(str(e))
    service = StopInOrder()
    StoreService(store).setServiceParent(service)
    broker = QueueBroker(store, reactor, maxQueued=options["max-queued"], maxInFlight=options["max-in-flight"])
    factory = makeMsgQueueFactory(broker, authenticator, options.limits(), reactor)
    listeningService(factory, description, reactor).setServiceParent(service)
    service.broker = broker
    service.factory = factory
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-msgqueue", reactor, lambda reactor: buildMsgQueue(options, reactor))
