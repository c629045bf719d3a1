# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-msgqueue}: the queue daemon.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from wsqueue.broker import QueueBroker, Retention
from wsqueue.msgqueue import makeMsgQueueFactory
from wsqueue.options import OptionTable, ServerOptions, StartupError, _duration, _positiveInt, buildAuthenticator
from wsqueue.readiness import readyFileOf
from wsqueue.store.config import DEFAULT_STORE, StoreService, openStore, parseStoreSpec
from wsqueue.store.sqlite import StoreError
from wsqueue.tap._common import CallOnStop, StopInOrder, daemonService, listeningService
from wsqueue.tap._listen import listenersOf

log = Logger()

MAINTENANCE_INTERVAL = 1.0
"""Seconds between runs of the broker's maintenance (ack wait, retention, expiry)."""


class Options(ServerOptions):
    synopsis = "[options]"
    longdesc = "msgqueue: a FIFO queue with consumer groups; publishers push on /pushmsg, subscribers pop on /popmsg."
    defaultPort = 8080
    optParameters: OptionTable = [
        ["max-queued", None, 100_000, ("Messages held before pushers are paused (flow control), for at most half "
                                       "of --ping-interval; after that their messages are refused with an Error "
                                       "until 10 % is free."), _positiveInt],
        ["max-group-backlog", None, None, ("Most unacknowledged messages kept for a group with no consumer "
                                           "connected; past it the group loses its oldest (logged) "
                                           "[default: half of --max-queued]."), _positiveInt],
        ["max-in-flight", None, 1000, "Unacknowledged messages per ack=explicit consumer.", _positiveInt],
        ["store", None, DEFAULT_STORE, "Where the queue is kept: sqlite:PATH (durable) or memory."],
        ["ack-wait", None, 30.0, "Seconds an ack=explicit consumer has to acknowledge before redelivery (or 30s, 5m...).", _duration],
        ["max-deliver", None, 5, ("Deliveries of one message alone before it moves to the dead letters (a window "
                                  "that comes back twice is redelivered one message at a time)."), _positiveInt],
        ["retention-max-messages", None, None, "Most messages kept for groups that lag behind [default: no limit].", _positiveInt],
        ["retention-max-bytes", None, None, "Most bytes of topics and contents kept [default: no limit].", _positiveInt],
        ["retention-max-age", None, None, "Oldest message kept, e.g. 3600, 12h, 7d [default: no limit].", _duration],
        ["group-expiry", None, "7d", "Groups with no consumer and no activity for this long are removed (or 'never')."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["max-group-backlog"] is None:
            self["max-group-backlog"] = max(1, self["max-queued"] // 2)
        try:
            parseStoreSpec(self["store"])
            if self["group-expiry"] != "never" and not isinstance(self["group-expiry"], float):
                self["group-expiry"] = _duration(self["group-expiry"])
        except ValueError as e:
            raise usage.UsageError(str(e))

    def retention(self) -> Retention:
        return Retention(
            self["retention-max-messages"],
            self["retention-max-bytes"],
            self["retention-max-age"],
            None if self["group-expiry"] == "never" else self["group-expiry"],
        )


def buildMsgQueue(
    options: Options, reactor, port: int | None = None, listen: Sequence[str] | None = None
) -> StopInOrder:
    """
    msgqueue's services: its listeners over a broker and its store.  The store is
    opened (and checked) once everything else is known to be usable, and closed
    after the listeners have closed their connections.  C{port} and C{listen}
    override C{--port} and C{--listen} (the all-in-one daemon's msgqueue).
    """
    authenticator = buildAuthenticator(options, reactor, log)
    listeners = listenersOf(options, reactor, "msgqueue", port, listen)
    try:
        store = openStore(options["store"], reactor)
    except StoreError as e:
        raise StartupError(str(e))
    service = StopInOrder()
    StoreService(store).setServiceParent(service)
    broker = QueueBroker(
        store, reactor, maxQueued=options["max-queued"], maxInFlight=options["max-in-flight"],
        ackWait=options["ack-wait"], maxDeliver=options["max-deliver"], retention=options.retention(),
        # A paused pusher cannot answer pings: resume it well before they time out.
        pauseLimit=options["ping-interval"] / 2, maxGroupBacklog=options["max-group-backlog"],
    )
    factory = makeMsgQueueFactory(broker, authenticator, options.limits(), reactor)
    listeningService(factory, listeners, "msgqueue", readyFileOf(options)).setServiceParent(service)
    # broker.maintenance never fails: TimerService's loop would stop for good if it did.
    maintenance = TimerService(MAINTENANCE_INTERVAL, broker.maintenance)
    maintenance.clock = reactor
    maintenance.setServiceParent(service)
    # Stopped first: from then on pushes are refused rather than stored half-way.
    CallOnStop(broker.stop).setServiceParent(service)
    service.broker = broker
    service.factory = factory
    return service


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-msgqueue", options, reactor, lambda reactor: buildMsgQueue(options, reactor))
