# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics and health checks: C{--metrics-port} serves C{/metrics},
C{/healthz} and C{/readyz} over plain HTTP (on 127.0.0.1 unless
C{--metrics-interface} says otherwise).

The hot paths count with plain integers on the objects that do the work (a
factory, the subscriber's reader, msgqueue's broker); collectors read them only
when Prometheus scrapes, so a message costs an integer addition, never a lock.
No label takes unbounded values: endpoints, reasons and stages are fixed sets;
there are no per-topic or per-user labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from wsqueue.connection import ERROR_KINDS
from wsqueue.readiness import ReadyFile

Collect = Callable[[], Iterable[Metric]]


class _Collector:
    """
    A collector made of functions that build metric families at scrape time.
    """

    def __init__(self) -> None:
        self.parts: list[Collect] = []

    def collect(self) -> Iterable[Metric]:
        for part in self.parts:
            yield from part()


class DaemonMetrics:
    """
    One daemon's metrics (the all-in-one daemon's stages share one).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector()
        self.registry.register(self._collector)
        self._servers: list = []
        self._links: list[tuple[str, object]] = []
        self.appendSeconds = Histogram(
            "wsqueue_store_append_seconds", "Time msgqueue's store took to store a batch of messages.",
            registry=self.registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self._collector.parts.append(self._serverMetrics)
        self._collector.parts.append(self._linkMetrics)

    def addServer(self, factory) -> None:
        """
        Count C{factory}'s connections and messages (L{wsqueue.server.StageServerFactory}).
        """
        self._servers.append(factory)

    def addLink(self, stage: str, owner) -> None:
        """
        Report whether C{stage}'s link to msgqueue (its owner, L{wsqueue.link.LinkOwner}) is up.
        """
        self._links.append((stage, owner))

    def addCollect(self, collect: Collect) -> None:
        """
        More metrics, built at scrape time by C{collect} (the broker's, the reader's).
        """
        self._collector.parts.append(collect)

    def _serverMetrics(self) -> Iterable[Metric]:
        open_ = GaugeMetricFamily("wsqueue_connections_open", "WebSocket connections open.", labels=["endpoint"])
        refused = CounterMetricFamily("wsqueue_connections_refused", "Connections and HTTP requests refused.",
                                      labels=["reason"])
        received = CounterMetricFamily("wsqueue_messages_received", "Messages received from clients.",
                                       labels=["endpoint"])
        failures = CounterMetricFamily("wsqueue_signin_failures", "Sign-ins refused for a wrong user or password.")
        errors = CounterMetricFamily("wsqueue_errors_sent", "Error frames sent to clients, by kind of reason.",
                                     labels=["reason"])
        acks = CounterMetricFamily("wsqueue_acks_sent", "Acks sent to clients (published, subscribed).")
        slow = CounterMetricFamily("wsqueue_slow_consumer_closes", "Connections closed as slow consumers (1008).")
        rated = CounterMetricFamily("wsqueue_rate_limit_closes", "Connections closed for publishing past --max-publish-rate.")
        counts: dict[str, int] = {}
        refusals: dict[str, int] = {}
        messages: dict[str, int] = {}
        errorCounts: dict[str, int] = {}
        signin = slowCloses = rateCloses = ackCount = 0
        for factory in self._servers:
            for path in factory.routes:
                counts.setdefault(path, 0)
                messages.setdefault(path, 0)
            for connection in factory.connections:
                counts[connection.path] = counts.get(connection.path, 0) + 1
            stats = factory.stats
            for reason, count in stats.refused.items():
                refusals[reason] = refusals.get(reason, 0) + count
            for path, count in stats.received.items():
                messages[path] = messages.get(path, 0) + count
            for kind, count in stats.errors.items():
                errorCounts[kind] = errorCounts.get(kind, 0) + count
            ackCount += stats.acks
            signin += stats.signinFailures
            slowCloses += stats.slowConsumers
            rateCloses += stats.rateLimited
        for path, count in sorted(counts.items()):
            open_.add_metric([path], count)
        for reason in ("auth", "throttled", "origin", "limit", "unavailable", "not_found"):
            refused.add_metric([reason], refusals.get(reason, 0))
        for path, count in sorted(messages.items()):
            received.add_metric([path], count)
        for kind in ERROR_KINDS:
            errors.add_metric([kind], errorCounts.get(kind, 0))
        acks.add_metric([], ackCount)
        failures.add_metric([], signin)
        slow.add_metric([], slowCloses)
        rated.add_metric([], rateCloses)
        yield from (open_, refused, received, failures, errors, acks, slow, rated)

    def _linkMetrics(self) -> Iterable[Metric]:
        if not self._links:
            return
        up = GaugeMetricFamily("wsqueue_link_up", "Whether the stage's link to msgqueue is open (1) or not (0).",
                               labels=["stage"])
        for stage, owner in self._links:
            up.add_metric([stage], 1 if owner.linked else 0)  # type: ignore[attr-defined]
        yield up


def brokerMetrics(broker) -> Collect:
    """
    msgqueue's broker and store: messages stored and delivered, and what the store
    holds (all of it, and what some group still needs).
    """

    broker.groupLags = {}  # the maintenance runs read it from now on

    def collect() -> Iterable[Metric]:
        stored = CounterMetricFamily("wsqueue_messages_stored", "Messages msgqueue stored.")
        stored.add_metric([], broker.stored)
        delivered = CounterMetricFamily("wsqueue_messages_delivered", "Messages delivered to clients or consumers.",
                                        labels=["endpoint"])
        delivered.add_metric(["/popmsg"], broker.delivered)
        held = GaugeMetricFamily("wsqueue_store_messages", "Messages the store holds: all of them (retained), "
                                 "and those some group still needs (backlog).", labels=["kind"])
        held.add_metric(["retained"], broker.store.retained)
        held.add_metric(["backlog"], broker.store.backlog)
        size = GaugeMetricFamily("wsqueue_store_bytes", "Size of the topics and contents the store holds "
                                 "(as --retention-max-bytes measures it).")
        size.add_metric([], broker.store.retainedBytes)
        lag = GaugeMetricFamily("wsqueue_group_lag", "Stored messages a consumer group has not been handed yet "
                                "(read once a second).", labels=["group"])
        for group, count in sorted((broker.groupLags or {}).items()):
            lag.add_metric([group], count)
        pending = GaugeMetricFamily("wsqueue_group_pending", "Messages a group's connected consumers hold "
                                    "unacknowledged.", labels=["group"])
        for group, count in sorted(broker.groupPending().items()):
            pending.add_metric([group], count)
        yield from (stored, delivered, held, size, lag, pending)

    return collect


def readerMetrics(reader) -> Collect:
    """
    The subscriber's reader: messages written to clients (one per client).
    """

    def collect() -> Iterable[Metric]:
        delivered = CounterMetricFamily("wsqueue_messages_delivered", "Messages delivered to clients or consumers.",
                                        labels=["endpoint"])
        delivered.add_metric(["/subscribe"], reader.delivered)
        yield delivered

    return collect


class _Text(Resource):
    isLeaf = True

    def __init__(self, answer: Callable[[], tuple[int, str]]) -> None:
        super().__init__()
        self.answer = answer

    def render_GET(self, request: Request) -> bytes:
        code, text = self.answer()
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return (text + "\n").encode("utf-8")


def readiness(ready: ReadyFile) -> tuple[int, str]:
    """
    C{/readyz}: 200 when every listener listens, every link to msgqueue is open
    and the store is usable; else 503 and the first reason.
    """
    problem = ready.problem()
    return (503, problem) if problem else (200, "ready")


def metricsSite(metrics: DaemonMetrics, ready: ReadyFile, reactor) -> Site:
    """
    The site of C{--metrics-port}: C{/metrics}, C{/healthz} (200 while the
    reactor turns: it answers only if it does) and C{/readyz}.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    root.putChild(b"healthz", _Text(lambda: (200, "ok")))
    root.putChild(b"readyz", _Text(lambda: readiness(ready)))
    site = Site(root, reactor=reactor)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
