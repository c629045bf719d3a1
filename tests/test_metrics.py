"""
C{--metrics-port}: Prometheus metrics, C{/healthz} and C{/readyz}, scraped with curl
from real daemons while messages flow and while msgqueue is killed and restarted.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.daemons import freePort, runProcess, startDaemonPipeline
from tests.helpers import Clients, nextJSON, withTimeout
from tests.test_curl import CURL, requireExecutable


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """
    The status and body of C{http://127.0.0.1:PORT/path}.
    """
    code, output = await runProcess([CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"])
    assert code == 0, output
    body, _, status = output.rpartition("\n")
    return int(status), body


def value(metrics: str, name: str, labels: str = "") -> float:
    """
    One sample's value in the exposition text (C{name{labels} value}).
    """
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    found = re.search(pattern, metrics, re.MULTILINE)
    assert found is not None, f"{name}{{{labels}}} not in:\n{metrics}"
    return float(found.group(1))


class MetricsTests(TestCase):
    timeout = 90

    async def test_metricsAndHealth(self) -> None:
        requireExecutable(CURL)
        ports = {name: freePort() for name in ("msgqueue", "publisher", "subscriber")}
        pipeline = await startDaemonPipeline(
            self, msgqueueArgs=("--store", "memory", "--metrics-port", str(ports["msgqueue"])),
            publisherArgs=("--metrics-port", str(ports["publisher"])),
            subscribers=[("--metrics-port", str(ports["subscriber"]))],
        )
        clients = Clients(self)
        reader = await clients.connect(pipeline.subscriber.port, "/subscribe")
        reader.sendMessage(b'{"Topic": "m", "Content": "sub", "Id": 0}')
        self.assertEqual(await nextJSON(reader), {"Ack": 0})
        publisher = await clients.connect(pipeline.publisher.port, "/publish")
        for number in range(1, 4):
            publisher.sendMessage(b'{"Topic": "m", "Content": "x", "Id": %d}' % number)
            self.assertEqual(await nextJSON(publisher), {"Ack": number})
        for _ in range(3):
            await nextJSON(reader)
        publisher.sendMessage(b'{"Topic": "", "Content": "x"}')
        self.assertIn("Error", await nextJSON(publisher))
        refused = clients.connect(pipeline.publisher.port, "/publish", "hello", "wrong")
        await self.assertFailure(refused, Exception)

        status, published = await scrape(ports["publisher"])
        self.assertEqual(status, 200)
        self.assertEqual(value(published, "wsqueue_messages_received_total", 'endpoint="/publish"'), 4)
        self.assertEqual(value(published, "wsqueue_errors_sent_total", 'reason="bad_input"'), 1)
        self.assertEqual(value(published, "wsqueue_acks_sent_total"), 3)
        self.assertEqual(value(published, "wsqueue_connections_open", 'endpoint="/publish"'), 1)
        self.assertEqual(value(published, "wsqueue_connections_refused_total", 'reason="auth"'), 1)
        self.assertEqual(value(published, "wsqueue_signin_failures_total"), 1)
        self.assertEqual(value(published, "wsqueue_link_up", 'stage="publisher"'), 1)
        _, subscribed = await scrape(ports["subscriber"])
        self.assertEqual(value(subscribed, "wsqueue_messages_delivered_total", 'endpoint="/subscribe"'), 3)
        self.assertEqual(value(subscribed, "wsqueue_connections_open", 'endpoint="/subscribe"'), 1)
        _, queued = await scrape(ports["msgqueue"])
        self.assertEqual(value(queued, "wsqueue_messages_stored_total"), 3)
        self.assertGreaterEqual(value(queued, "wsqueue_messages_delivered_total", 'endpoint="/popmsg"'), 3)
        self.assertGreaterEqual(value(queued, "wsqueue_store_append_seconds_count"), 1)
        self.assertEqual(value(queued, "wsqueue_connections_open", 'endpoint="/pushmsg"'), 1)
        # Read by the maintenance runs (once a second): the subscriber's group is not behind.
        await withTimeout(Deferred.fromCoroutine(self.untilIn(ports["msgqueue"], "wsqueue_group_lag{")), 10,
                          what="the groups' lag")
        _, queued = await scrape(ports["msgqueue"])
        self.assertRegex(queued, r'(?m)^wsqueue_group_lag\{group="subscriber-[^"]+"\} 0\.0$')
        self.assertRegex(queued, r'(?m)^wsqueue_group_pending\{group="subscriber-[^"]+"\} \d+\.0$')
        self.assertNotRegex(published + subscribed + queued, r'topic=|user=')

        # msgqueue killed: the subscriber is not ready, but alive; then ready again.
        self.assertEqual(await scrape(ports["subscriber"], "/readyz"), (200, "ready\n"))
        mark = pipeline.subscriber.eventMark()
        pipeline.msgqueue.kill(9)
        await pipeline.msgqueue.waitForExit()
        await self.waitForStatus(ports["subscriber"], "/readyz", 503)
        status, reason = await scrape(ports["subscriber"], "/readyz")
        self.assertTrue(reason.startswith("link to msgqueue is down"), reason)
        self.assertEqual(await scrape(ports["subscriber"], "/healthz"), (200, "ok\n"))
        _, subscribed = await scrape(ports["subscriber"])
        self.assertEqual(value(subscribed, "wsqueue_link_up", 'stage="subscriber"'), 0)
        await pipeline.msgqueue.restart()
        await pipeline.subscriber.waitForLinks(since=mark)
        self.assertEqual(await scrape(ports["subscriber"], "/readyz"), (200, "ready\n"))

    async def untilIn(self, port: int, text: str) -> None:
        while text not in (await scrape(port))[1]:
            pass

    async def waitForStatus(self, port: int, path: str, status: int) -> None:
        async def poll() -> None:
            while (await scrape(port, path))[0] != status:
                pass

        await withTimeout(Deferred.fromCoroutine(poll()), 10, what=f"{path} to answer {status}")


class CollectorTests(TestCase):
    """
    The collectors in process: what each metric reads, on a scrape.
    """

    def test_exposition(self) -> None:
        from prometheus_client import generate_latest
        from twisted.internet.task import Clock

        from wsqueue.auth import makeAuthenticator
        from wsqueue.broker import QueueBroker
        from wsqueue.connection import Limits
        from wsqueue.metrics import DaemonMetrics, brokerMetrics, readerMetrics
        from wsqueue.server import StageServerFactory
        from wsqueue.store.memory import MemoryStore
        from wsqueue.subscriber import QueueReader, TopicRegistry

        clock = Clock()
        metrics = DaemonMetrics()
        factory = StageServerFactory({"/publish": None, "/subscribe": None}, makeAuthenticator(None, clock),  # type: ignore[dict-item]
                                     Limits(), clock)
        factory.stats.refuse("auth")
        factory.stats.refuse("auth")
        factory.stats.signinFailures = 2
        factory.stats.received["/publish"] = 7
        factory.stats.error("Topic must not be empty")
        factory.stats.error("not allowed")
        factory.stats.acks = 5
        factory.stats.slowConsumers = 3
        factory.stats.rateLimited = 4
        metrics.addServer(factory)
        owner = type("Owner", (), {"linked": True})()
        metrics.addLink("publisher", owner)
        broker = QueueBroker(MemoryStore(historyKeep=5), clock)
        broker.stored, broker.delivered = 11, 12
        metrics.addCollect(brokerMetrics(broker))
        reader = QueueReader(TopicRegistry(), clock)
        reader.delivered = 13
        metrics.addCollect(readerMetrics(reader))
        metrics.appendSeconds.observe(0.002)
        text = generate_latest(metrics.registry).decode()
        for name, labels, expected in [
            ("wsqueue_connections_open", 'endpoint="/publish"', 0),
            ("wsqueue_connections_refused_total", 'reason="auth"', 2),
            ("wsqueue_connections_refused_total", 'reason="limit"', 0),
            ("wsqueue_signin_failures_total", "", 2),
            ("wsqueue_messages_received_total", 'endpoint="/publish"', 7),
            ("wsqueue_messages_received_total", 'endpoint="/subscribe"', 0),
            ("wsqueue_errors_sent_total", 'reason="bad_input"', 1),
            ("wsqueue_errors_sent_total", 'reason="not_allowed"', 1),
            ("wsqueue_errors_sent_total", 'reason="full"', 0),
            ("wsqueue_acks_sent_total", "", 5),
            ("wsqueue_slow_consumer_closes_total", "", 3),
            ("wsqueue_rate_limit_closes_total", "", 4),
            ("wsqueue_link_up", 'stage="publisher"', 1),
            ("wsqueue_messages_stored_total", "", 11),
            ("wsqueue_messages_delivered_total", 'endpoint="/popmsg"', 12),
            ("wsqueue_messages_delivered_total", 'endpoint="/subscribe"', 13),
            ("wsqueue_store_messages", 'kind="retained"', 0),
            ("wsqueue_store_bytes", "", 0),
            ("wsqueue_store_append_seconds_count", "", 1),
        ]:
            self.assertEqual(value(text, name, labels), expected, (name, labels))
        owner.linked = False  # type: ignore[attr-defined]
        self.assertEqual(value(generate_latest(metrics.registry).decode(), "wsqueue_link_up", 'stage="publisher"'), 0)

    def test_readiness(self) -> None:
        from wsqueue.metrics import readiness
        from wsqueue.readiness import ReadyFile

        ready = ReadyFile(None)
        ready.expectListener()
        ready.expectLink("wss://q1/popmsg?group=g", "wss://q2/popmsg?group=g")
        ready.expectStore()
        self.assertEqual(readiness(ready), (503, "not listening yet"))
        ready.listening("subscriber", "127.0.0.1", 8082)
        self.assertEqual(readiness(ready), (503, "link to msgqueue is down (wss://q1/popmsg)"))
        ready.linkOpened("wss://q2/popmsg?group=g")
        self.assertEqual(readiness(ready), (503, "store not open yet"))
        ready.storeOpened("redis://r")
        self.assertEqual(readiness(ready), (200, "ready"))
        ready.linkClosed("wss://q2/popmsg?group=g")
        self.assertEqual(readiness(ready)[0], 503)

    def test_site(self) -> None:
        from twisted.internet.task import Clock
        from twisted.web.test.requesthelper import DummyRequest

        from wsqueue.metrics import DaemonMetrics, metricsSite
        from wsqueue.readiness import ReadyFile

        site = metricsSite(DaemonMetrics(), ReadyFile(None), Clock())
        for path, code, body in [(b"healthz", 200, b"ok\n"), (b"readyz", 200, b"ready\n")]:
            request = DummyRequest([path])
            resource = site.resource.getChildWithDefault(path, request)
            self.assertEqual(resource.render(request), body)
            self.assertEqual(request.responseCode or 200, code)

    def test_readyOnlyWhileTheStoreTakesWrites(self) -> None:
        """
        msgqueue is not ready while its store refuses appends (a full disk, Redis
        read-only), and ready again once one succeeds.
        """
        from twisted.internet.defer import fail
        from twisted.internet.task import Clock

        from wsqueue.broker import QueueBroker
        from wsqueue.metrics import readiness
        from wsqueue.readiness import ReadyFile
        from wsqueue.store.memory import MemoryStore

        class FullStore(MemoryStore):
            full = True

            def append(self, messages, producer=None, seqs=None):
                if self.full:
                    return fail(OSError(28, "No space left on device"))
                return super().append(messages, producer, seqs)

        store = FullStore()
        broker = QueueBroker(store, Clock())
        ready = ReadyFile(None)
        ready.checks.append(lambda: None if broker.appendFailure is None else f"store does not take writes ({broker.appendFailure})")
        self.assertEqual(readiness(ready), (200, "ready"))
        self.failureResultOf(broker.push([("t", "x")]), OSError)
        self.assertEqual(readiness(ready), (503, "store does not take writes (OSError: [Errno 28] No space left on device)"))
        store.full = False
        self.successResultOf(broker.push([("t", "x")]))
        self.assertEqual(readiness(ready), (200, "ready"))
