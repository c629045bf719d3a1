"""
msgqueue on a Redis store (#10): it starts while Redis is down and serves once Redis
is up; several brokers on one Redis serve one queue, and an entry pushed through one
reaches a consumer waiting on another at once (a notification, not a poll).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue.broker import QueueBroker
from wsqueue.store.config import describeStore
from wsqueue.store.redis import RedisStore
from wsqueue.tap import msgqueue
from wsqueue.testing import RecordingSender

from .helpers import Clients, DaemonOptionsMixin, certDir, waitFor
from .redisserver import RedisServer, freePort, openRedisStore, sharedServer
from .test_broker import FakeConsumer
from .test_readiness import readEvents


class StoreOpeningTests(TestCase):
    """
    A msgqueue whose Redis is not up yet listens at once, refuses WebSockets with
    HTTP 503 saying why, retries, and serves once Redis is up.
    """

    timeout = 30

    async def test_startsBeforeRedis(self) -> None:
        redisPort = freePort()
        server = RedisServer(port=redisPort)
        self.addCleanup(server.stop)  # after msgqueue has stopped
        readyPath = self.mktemp()
        options = msgqueue.Options()
        options.parseOptions([
            "--cert-dir", certDir(), "--port", "0", "--store", f"redis://127.0.0.1:{redisPort}/0",
            "--ready-file", readyPath,
        ])
        service = msgqueue.makeService(options, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        opening = next(child for child in service if isinstance(child, msgqueue.StoreOpening))
        await waitFor(lambda: opening.failures >= 1, what="a failed attempt to reach Redis")
        [listening] = [event for event in readEvents(readyPath) if event["event"] == "listening"]
        refused = await Clients(self).connect(listening["port"], "/popmsg?group=g").addErrback(lambda f: f.value)
        self.assertEqual((refused.status, refused.statusReason), (503, msgqueue.NOT_READY))
        self.assertNotIn({"event": "ready"}, readEvents(readyPath))
        server.start()
        await waitFor(lambda: service.factory.unavailable is None, timeout=10, what="the store opened")
        client = await Clients(self).connect(listening["port"], "/popmsg?group=g")
        self.assertTrue(client.isOpen)
        events = readEvents(readyPath)
        self.assertIn({"event": "store-open", "store": f"redis://127.0.0.1:{redisPort}/0"}, events)
        self.assertEqual(events[-1], {"event": "ready"})


class StoreDescriptionTests(SynchronousTestCase):
    def test_passwordHidden(self) -> None:
        """
        Logs and readiness events name a Redis store without its password.
        """
        self.assertEqual(describeStore("redis://u:secret@h:6380/2"), "redis://u:***@h:6380/2")
        self.assertEqual(describeStore("rediss://:secret@h"), "rediss://:***@h:6379/0")
        self.assertEqual(describeStore("redis+sentinel://:s@a:1,b:2/mymaster/1"), "redis+sentinel://:***@a:1,b:2/mymaster/1")
        self.assertEqual(describeStore("redis://h"), "redis://h:6379/0")
        self.assertEqual(describeStore("memory"), "memory")


class StoreOptionsTests(DaemonOptionsMixin, SynchronousTestCase):
    def test_options(self) -> None:
        """
        --store-ca and --redis-min-replicas reach the Redis store; a CA for a store
        without TLS, or a negative replica count, is refused.
        """
        options = self.options(msgqueue, "--store", "rediss://h:6380/0", "--store-ca", certDir() + "/ca.crt",
                               "--redis-min-replicas", "1")
        service = msgqueue.makeService(options, reactor=self.reactor)
        store = service.broker.store
        self.assertIsInstance(store, RedisStore)
        self.assertEqual((store.address.tls, store._minReplicas), (True, 1))
        with self.assertRaises(SystemExit) as raised:
            msgqueue.makeService(self.options(msgqueue, "--store", "redis://h", "--store-ca", "x"), reactor=self.reactor)
        self.assertIn("only for a rediss:// store", str(raised.exception))
        with self.assertRaises(usage.UsageError):
            self.options(msgqueue, "--redis-min-replicas", "-1")


class SharedBrokersTests(TestCase):
    """
    Two brokers (two msgqueue daemons) on one Redis serve one queue.
    """

    timeout = 20

    async def setUp(self) -> None:
        self.server = sharedServer()
        self.server.command("FLUSHALL")
        self.one = await self.broker()
        self.two = await self.broker()

    async def broker(self, **kwargs) -> QueueBroker:
        broker = QueueBroker(await openRedisStore(self, self.server), reactor, **kwargs)
        self.addCleanup(broker.stop)
        broker.store.onNewEntries(broker.entriesAppended)
        return broker

    async def test_pushedThroughOneDeliveredThroughTheOther(self) -> None:
        """
        A consumer waiting on one daemon gets what is pushed through the other at
        once, with no maintenance run (no polling), and each entry goes to one
        consumer of the group only.
        """
        waiting = FakeConsumer("b1")
        self.two.addConsumer(waiting)
        other = FakeConsumer("a1")
        self.one.addConsumer(other)
        await self.one.push([("t", "x"), ("t", "y")])
        await waitFor(lambda: len(waiting.offsets) + len(other.offsets) == 2, what="both entries delivered")
        self.assertEqual(sorted(waiting.offsets + other.offsets), [1, 2])
        await self.two.push([("t", "z")])
        await waitFor(lambda: 3 in waiting.offsets + other.offsets, what="the third entry")
        self.assertEqual(sorted(waiting.offsets + other.offsets), [1, 2, 3])

    def test_ownAppendNotServedTwice(self) -> None:
        """
        The notification of a broker's own append does not start a second delivery
        pass: it is already served.
        """
        passes = []
        self.one._scheduleDispatch = lambda: passes.append(1)
        self.one._lastAppended = 5
        self.one.entriesAppended(5)
        self.one.entriesAppended(4)
        self.assertEqual(passes, [])
        self.one.entriesAppended(6)
        self.one.entriesAppended(None)
        self.assertEqual(passes, [1, 1])

    async def test_roomMadeElsewhereReopens(self) -> None:
        """
        A daemon whose pushers are paused because the shared queue was full resumes
        them at its next maintenance run once consumers on another daemon have made
        room: its own size figure comes from its own operations, and while paused it
        makes none.
        """
        full = await self.broker(maxQueued=10)
        pusher = RecordingSender()
        full.addPusher(pusher)
        await full.push([("t", str(i)) for i in range(10)])
        self.assertEqual(pusher.calls, ["pause"])
        consumer = FakeConsumer("b1", explicitAck=True)
        self.two.addConsumer(consumer)
        await waitFor(lambda: len(consumer.offsets) == 10, what="the entries delivered through the other daemon")
        await self.two.ack(consumer, 10)
        self.assertEqual(pusher.calls, ["pause"])
        await full.maintenance()
        self.assertEqual(pusher.calls, ["pause", "resume"])
