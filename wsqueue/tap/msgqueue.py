# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue-msgqueue}: the queue daemon.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.application.internet import TimerService, backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from wsqueue.broker import QueueBroker, Retention
from wsqueue.logsummary import RepeatSummary
from wsqueue.metrics import brokerMetrics
from wsqueue.msgqueue import makeMsgQueueFactory
from wsqueue.options import (
    OptionTable,
    ServerOptions,
    StartupError,
    _duration,
    _nonNegativeInt,
    _positiveInt,
    buildAuthenticator,
    buildMetrics,
)
from wsqueue.readiness import ReadyFile, readyFileOf
from wsqueue.server import RevokeChangedCredentials, StageServerFactory
from wsqueue.store.base import IMessageStore
from wsqueue.store.config import (
    DEFAULT_STORE,
    StoreService,
    describeStore,
    opensLater,
    openStore,
    parseStoreSpec,
    storeReady,
)
from wsqueue.store.sqlite import StoreError
from wsqueue.tap._common import CallOnStop, StopInOrder, daemonService, listeningService
from wsqueue.tap._listen import listenersOf

log = Logger()

MAINTENANCE_INTERVAL = 1.0
"""Seconds between runs of the broker's maintenance (ack wait, retention, expiry)."""
STORE_RETRY_SUMMARY = 60.0
"""A store that stays unreachable at start-up logs its first failure, then a count a minute."""
NOT_READY = "msgqueue is not connected to its store yet; retry shortly"


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
        ["store", None, DEFAULT_STORE, ("Where the queue is kept: sqlite:PATH (durable, one machine), memory, "
                                        "redis://[USER:PASSWORD@]HOST[:PORT][/DB] (shared by every msgqueue naming it), "
                                        "rediss://... (TLS), or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB].")],
        ["store-ca", None, None, "CA certificate a rediss:// store's certificate must chain to [default: the system's]."],
        ["redis-min-replicas", None, 0, ("Replicas that must have each message (Redis WAIT) before msgqueue "
                                         "acknowledges it; with Sentinel, 1 or more keeps a fail-over from losing "
                                         "acknowledged messages."), _nonNegativeInt],
        ["ack-wait", None, 30.0, "Seconds an ack=explicit consumer has to acknowledge before redelivery (or 30s, 5m...).", _duration],
        ["max-deliver", None, 5, ("Deliveries of one message alone before it moves to the dead letters (a window "
                                  "that comes back twice is redelivered one message at a time)."), _positiveInt],
        ["retention-max-messages", None, None, "Most messages kept for groups that lag behind [default: no limit].", _positiveInt],
        ["retention-max-bytes", None, None, "Most bytes of topics and contents kept [default: no limit].", _positiveInt],
        ["retention-max-age", None, None, "Oldest message kept, e.g. 3600, 12h, 7d [default: no limit].", _duration],
        ["group-expiry", None, "7d", "Groups with no consumer and no activity for this long are removed (or 'never')."],
        ["history-max", None, 10_000, ("Newest messages kept after every group has them, for clients that recover "
                                       "what they missed (subscribe with Since); also the most one recovery "
                                       "replays (0: no history)."), _nonNegativeInt],
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
        store = openStore(
            options["store"], reactor, caPath=options["store-ca"], minReplicas=options["redis-min-replicas"],
            historyKeep=options["history-max"],
        )
    except StoreError as e:
        raise StartupError(str(e))
    service = StopInOrder()
    StoreService(store).setServiceParent(service)
    broker = QueueBroker(
        store, reactor, maxQueued=options["max-queued"], maxInFlight=options["max-in-flight"],
        ackWait=options["ack-wait"], maxDeliver=options["max-deliver"], retention=options.retention(),
        # A paused pusher cannot answer pings: resume it well before they time out.
        pauseLimit=options["ping-interval"] / 2, maxGroupBacklog=options["max-group-backlog"],
        historyMax=options["history-max"],
    )
    factory = makeMsgQueueFactory(broker, authenticator, options.limits(), reactor)
    factory.permittedOrigins = frozenset(options["allowed-origins"])
    metrics = buildMetrics(options)
    if metrics is not None:
        metrics.addServer(factory)
        metrics.addCollect(brokerMetrics(broker))
        broker.appendTimer = metrics.appendSeconds.observe
    ready = readyFileOf(options)
    ready.checks.append(
        lambda: None if broker.appendFailure is None else f"store does not take writes ({broker.appendFailure})"
    )
    listeningService(factory, listeners, "msgqueue", ready).setServiceParent(service)
    RevokeChangedCredentials(factory, reactor).setServiceParent(service)
    # broker.maintenance never fails: TimerService's loop would stop for good if it did.
    maintenance = TimerService(MAINTENANCE_INTERVAL, broker.maintenance)
    maintenance.clock = reactor
    if not opensLater(store):
        maintenance.setServiceParent(service)
    else:
        StoreOpening(store, broker, factory, reactor, ready, describeStore(options["store"]), [maintenance]).setServiceParent(service)
    # Stopped first: from then on pushes are refused rather than stored half-way.
    CallOnStop(broker.stop).setServiceParent(service)
    service.broker = broker
    service.factory = factory
    return service


class StoreOpening(MultiService):
    """
    Opens a store that connects over the network (Redis) once the daemon runs,
    and tries again until it can: a Redis that is down or not yet up at boot must
    not keep msgqueue down after it.  Meanwhile msgqueue listens, so that a port in
    use still stops start-up at once, but refuses WebSockets with HTTP 503 saying
    why (the stages linked to it retry, as while msgqueue is down), and its
    maintenance waits (its children start once the store is open).  Failures are
    logged once, then counted a minute; the daemon reports C{store-open} (and
    then C{ready}) in its C{--ready-file}.
    """

    def __init__(
        self, store: IMessageStore, broker: QueueBroker, factory: StageServerFactory, reactor, ready: ReadyFile,
        description: str, afterOpen: Sequence[Service], retryPolicy=None,
    ) -> None:
        super().__init__()
        self.store = store
        self.broker = broker
        self.factory = factory
        self.reactor = reactor
        self.ready = ready
        self.description = description
        self.afterOpen = list(afterOpen)
        self.retryPolicy = retryPolicy or backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=5.0, jitter=lambda: 0)
        self.failures = 0
        self._retry: IDelayedCall | None = None
        self._summary = RepeatSummary(log, reactor, interval=STORE_RETRY_SUMMARY, level=LogLevel.error)
        ready.expectStore()

    def startService(self) -> None:
        super().startService()
        self.factory.unavailable = NOT_READY
        self._attempt()

    def _attempt(self) -> None:
        self._retry = None
        storeReady(self.store).addCallbacks(self._opened, self._failed)

    def _opened(self, _: object) -> None:
        if not self.running:
            return
        self._summary.flush()
        log.info("msgqueue's store {store} is open (epoch {epoch})", store=self.description, epoch=self.store.epoch)
        self.factory.unavailable = None
        onNewEntries = getattr(self.store, "onNewEntries", None)
        if onNewEntries is not None:
            onNewEntries(self.broker.entriesAppended)
        for child in self.afterOpen:
            child.setServiceParent(self)
        self.ready.storeOpened(self.description)

    def _failed(self, failure: Failure) -> None:
        if not self.running:
            return
        self.failures += 1
        self._summary.emit("{error}; msgqueue refuses connections (HTTP 503) and tries again", error=failure.getErrorMessage())
        self._retry = self.reactor.callLater(self.retryPolicy(self.failures), self._attempt)

    def stopService(self):
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._summary.flush()
        return super().stopService()


def makeService(options: Options, reactor=None) -> MultiService:
    return daemonService("wsqueue-msgqueue", options, reactor, lambda reactor: buildMsgQueue(options, reactor))
