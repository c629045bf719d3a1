"""
What only the Redis store promises, against real redis-server processes: several
msgqueue daemons (store instances) sharing one queue, atomic appends, surviving a
Redis restart, clear errors when Redis cannot be reached, TLS with a verified host
name, replicas, and notifications of new entries.  The conformance suite that
every store passes is in L{tests.test_store}.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.store import redis
from wsqueue.store.config import openStore, parseStoreSpec, storeReady
from wsqueue.store.redis import RedisAddress, RedisStore, RedisStoreError, parseRedisURL
from wsqueue.store.sqlite import StoreError
from wsqueue.tls import clientCreator

from .helpers import waitFor
from .redisserver import RedisServer, freePort, openRedisStore, sharedServer

STREAM = "wsqueue:{msgqueue}:stream"
META = "wsqueue:{msgqueue}:meta"


async def eventually(operation, timeout: float = 15.0, what: str = ""):
    """
    The result of C{operation()} (a Deferred) once it succeeds, retried every 0.1 s;
    fail with a clear message at the deadline.
    """
    deadline = reactor.seconds() + timeout
    while True:
        try:
            return await operation()
        except StoreError:
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await deferLater(reactor, 0.1, lambda: None)


class SharedQueueTests(TestCase):
    """
    Two store instances on one Redis, as two msgqueue daemons serving one queue.
    """

    timeout = 20

    async def setUp(self) -> None:
        self.server = sharedServer()
        self.server.command("FLUSHALL")
        self.one = await self.open()
        self.two = await self.open()

    async def open(self, **kwargs) -> RedisStore:
        return await openRedisStore(self, self.server, **kwargs)

    async def test_offsetsAgreed(self) -> None:
        """
        Offsets are allocated in Redis: appends through either daemon get the next
        ones, and both see the same entries.
        """
        self.assertEqual(await self.one.append([("t", "a"), ("t", "b")]), [1, 2])
        self.assertEqual(await self.two.append([("t", "c")]), [3])
        self.assertEqual(await self.one.append([("t", "d")]), [4])
        entries = await self.two.readGroup("g", "c", 10)
        self.assertEqual([(e.offset, e.content) for e in entries], [(1, "a"), (2, "b"), (3, "c"), (4, "d")])

    async def test_groupReadElsewhereIsNotAbsent(self) -> None:
        """
        A group with a consumer on one daemon is present for every daemon: another
        daemon neither trims its backlog nor expires it as absent, until the daemon
        serving it has stopped saying so for longer than PRESENCE_TTL (it died).
        """
        clock = Clock()
        clock.advance(1000)
        one, two = await self.open(now=clock.seconds), await self.open(now=clock.seconds)
        await one.append([("t", str(i)) for i in range(10)])
        await one.readGroup("served", "c1", 1)
        self.assertEqual(await one.trimGroupBacklog(3, {"served"}), {})
        self.assertEqual(await two.trimGroupBacklog(3, set()), {})
        self.assertEqual(await two.expireGroups(0, set()), [])
        clock.advance(redis.PRESENCE_TTL + 1)
        self.assertEqual(await two.trimGroupBacklog(3, set()), {"served": 7})

    async def test_queueGoneStartsOver(self) -> None:
        """
        A Redis that comes back without the queue (no persistence, FLUSHALL, a
        replica promoted without the data): the operation that finds out fails with
        a clear error, and the store starts the queue again with a new epoch,
        instead of failing every operation until msgqueue restarts.
        """
        store = await self.open()
        await store.append([("t", "a"), ("t", "b")])
        epoch = store.epoch
        self.server.command("FLUSHALL")
        error = await store.append([("t", "c")]).addErrback(lambda failure: failure.value)
        self.assertIn("the queue is gone from Redis", str(error))
        await waitFor(lambda: store.epoch != epoch, what="the queue opened again")
        self.assertEqual(await store.append([("t", "d")]), [1])
        self.assertEqual([e.content for e in await store.readGroup("g", "c", 10)], ["d"])
        self.flushLoggedErrors()

    async def test_groupsShared(self) -> None:
        """
        An entry handed out through one daemon is not handed out again through the
        other; it can be acknowledged through either, and trimming sees both.
        """
        await self.one.append([("t", "a"), ("t", "b"), ("t", "c")])
        self.assertEqual([e.offset for e in await self.one.readGroup("g", "c1", 2)], [1, 2])
        self.assertEqual([e.offset for e in await self.two.readGroup("g", "c2", 10)], [3])
        self.assertEqual(await self.two.readGroup("g", "c3", 10), [])
        self.assertEqual(await self.two.ack("g", [1, 3]), 2)
        self.assertEqual([(p.offset, p.consumer) for p in await self.one.pending("g")], [(2, "c1")])
        self.assertEqual(await self.one.ack("g", [2]), 1)
        self.assertEqual((self.one.retained, self.server.command("XLEN", STREAM)), (0, 0))

    async def test_releaseThroughTheOther(self) -> None:
        """
        Entries of a consumer released by one daemon are handed out again through the other.
        """
        await self.one.append([("t", "a"), ("t", "b")])
        await self.one.readGroup("g", "c1", 10)
        self.assertEqual(await self.two.release("g", "c1"), 2)
        entries = await self.two.readGroup("g", "c2", 10)
        self.assertEqual([(e.offset, e.deliveries) for e in entries], [(1, 2), (2, 2)])

    async def test_resendThroughTheOtherSkipped(self) -> None:
        """
        A producer that reconnects to another daemon and resends is recognised there.
        """
        self.assertEqual(await self.one.append([("t", "a"), ("t", "b")], "p1", [1, 2]), [1, 2])
        self.assertEqual(await self.two.append([("t", "b"), ("t", "c")], "p1", [2, 3]), [None, 3])

    async def test_epochShared(self) -> None:
        """
        The epoch is made once per queue: every daemon reads the same; a new queue
        (the data gone) has a new one.
        """
        self.assertTrue(self.one.epoch)
        self.assertEqual(self.one.epoch, self.two.epoch)
        self.server.command("FLUSHALL")
        self.assertNotEqual((await self.open()).epoch, self.one.epoch)

    async def test_queuesApart(self) -> None:
        """
        Queues of another name, or in another database, share nothing.
        """
        other = await self.open(queue="other")
        await self.one.append([("t", "a")])
        self.assertEqual(await other.append([("t", "b")]), [1])
        self.assertNotEqual(other.epoch, self.one.epoch)
        elsewhere = RedisStore(parseRedisURL(f"redis://127.0.0.1:{self.server.port}/3"))
        self.addCleanup(elsewhere.close)
        await elsewhere.open()
        self.assertEqual(elsewhere.retained, 0)

    async def test_retainedLagsUntilNextOperation(self) -> None:
        """
        C{retained} is what this daemon's last operation saw: another daemon's
        appends show after this one's next operation.
        """
        await self.one.append([("t", "a"), ("t", "b")])
        self.assertEqual(self.two.retained, 0)
        await self.two.pending("g")
        await self.two.ack("g", [])
        self.assertEqual(self.two.retained, 2)

    async def test_failedAppendLeavesNothing(self) -> None:
        """
        An append whose script fails at its first write (here: something else at
        the stream's key) leaves no offset and no sequence number behind: once the
        key is fixed, the producer's resend is stored, at offset 1.
        """
        self.server.command("SET", STREAM, "not a stream")
        failure = await self.assertFailure(self.one.append([("t", "a"), ("t", "b")], "p1", [1, 2]), RedisStoreError)
        self.assertIn("WRONGTYPE", str(failure))
        self.assertEqual(self.server.command("HGET", META, "last"), "0")
        self.assertEqual(self.server.command("EXISTS", "wsqueue:{msgqueue}:producers"), 0)
        self.server.command("DEL", STREAM)
        self.assertEqual(await self.two.append([("t", "a"), ("t", "b")], "p1", [1, 2]), [1, 2])

    async def test_outOfMemoryLeavesNothing(self) -> None:
        """
        Redis out of memory refuses an append whole, with Redis's reason; appends
        work again once there is room.
        """
        await self.one.append([("t", "a")], "p1", [1])
        self.server.command("CONFIG", "SET", "maxmemory", "1")
        try:
            failure = await self.assertFailure(self.one.append([("t", "b")], "p1", [2]), RedisStoreError)
        finally:
            self.server.command("CONFIG", "SET", "maxmemory", "0")
        self.assertIn("maxmemory", str(failure))
        self.assertEqual(await self.one.append([("t", "b")], "p1", [2]), [2])

    async def test_newEntriesNotified(self) -> None:
        """
        A daemon listening for new entries hears of every append, through any
        daemon: first None (subscribed: something may have been missed), then the
        highest offset of each append.
        """
        heard: list[int | None] = []
        self.two.onNewEntries(heard.append)
        await eventually(lambda: self._heard(heard, [None]), what="the subscription")
        await self.one.append([("t", "a"), ("t", "b")])
        await self.two.append([("t", "c")])
        await self.one.append([("t", "c")], "p", [1])
        await self.one.append([("t", "c")], "p", [1])  # a resend: nothing stored, nothing said
        await eventually(lambda: self._heard(heard, [None, 2, 3, 4]), what="the notifications")

    async def _heard(self, heard: list, expected: list) -> None:
        if heard != expected:
            raise StoreError(f"heard {heard}")


class HistoryIndexTests(TestCase):
    """
    The per-topic index of history reads on Redis: bounded with what is held, and
    never trusted for what was appended without it.
    """

    timeout = 20

    async def setUp(self) -> None:
        self.server = sharedServer()
        self.server.command("FLUSHALL")

    def keys(self) -> set[str]:
        return {key.decode() if isinstance(key, bytes) else key for key in self.server.command("KEYS", "*:ti:*")}

    async def test_indexFollowsTheStream(self) -> None:
        """
        A topic's index goes once its last entry has gone (trimmed, or dropped by
        retention), and the list of topics with it.
        """
        store = await openRedisStore(self, self.server, historyKeep=2)
        await store.append([("a", "1"), ("b", "2"), ("a", "3")])
        self.assertEqual(self.keys(), {"wsqueue:{msgqueue}:ti:a", "wsqueue:{msgqueue}:ti:b"})
        entries = await store.readGroup("g", "c", 10)
        await store.ack("g", [entry.offset for entry in entries])
        self.assertEqual(self.keys(), {"wsqueue:{msgqueue}:ti:a", "wsqueue:{msgqueue}:ti:b"})
        await store.append([("a", "4")])
        await store.ack("g", [entry.offset for entry in await store.readGroup("g", "c", 10)])
        self.assertEqual(self.keys(), {"wsqueue:{msgqueue}:ti:a"})
        self.assertEqual(self.server.command("SMEMBERS", "wsqueue:{msgqueue}:topics"), ["a"])
        await store.applyRetention(0, None, None)
        self.assertEqual(self.keys(), set())
        self.assertEqual(self.server.command("SMEMBERS", "wsqueue:{msgqueue}:topics"), [])

    async def test_appendedWithoutIndex(self) -> None:
        """
        What a daemon without history appended is not in the index: a history read
        reaching back to it is not complete.
        """
        without = await openRedisStore(self, self.server, historyKeep=0)
        await without.append([("a", "1"), ("a", "2")])
        withHistory = await openRedisStore(self, self.server, historyKeep=10)
        await withHistory.append([("a", "3")])
        history = await withHistory.history("a", 0, 10)
        self.assertEqual(([entry.offset for entry in history.entries], history.complete), ([3], False))
        history = await withHistory.history("a", 2, 10)
        self.assertEqual(([entry.offset for entry in history.entries], history.complete), ([3], True))


class RestartTests(TestCase):
    """
    Redis killed (kill -9) and started again on the same folder, with an
    append-only file fsynced after every write.
    """

    timeout = 40

    async def test_restartKeepsEverythingAndReconnects(self) -> None:
        """
        While Redis is down operations fail with a clear error; once it is back the
        store reconnects by itself, and entries, groups, pending entries, producers'
        numbers and the epoch are all still there.
        """
        server = RedisServer(appendOnly=True).start()
        self.addCleanup(server.stop)
        store = RedisStore(parseRedisURL(server.url))
        self.addCleanup(store.close)
        await store.open()
        epoch = store.epoch
        await store.append([("t", "a"), ("t", "b"), ("t", "c")], "p1", [1, 2, 3])
        self.assertEqual([e.offset for e in await store.readGroup("g", "c1", 2)], [1, 2])
        await store.ack("g", [1])

        server.kill()
        failure = await self.assertFailure(store.readGroup("g", "c2", 10), RedisStoreError)
        self.assertRegex(str(failure), f"^(lost the connection to )?Redis at 127.0.0.1:{server.port}")
        await deferLater(reactor, 0.1, lambda: None)
        # No connection now: failed at once, not queued until Redis returns.
        failure = await self.assertFailure(store.append([("t", "d")]), RedisStoreError)
        self.assertEqual(str(failure), f"Redis at 127.0.0.1:{server.port} is unreachable (reconnecting)")

        server.start()
        self.assertEqual(await eventually(lambda: store.append([("t", "c")], "p1", [3]), what="reconnection"), [None])
        self.assertEqual(store.epoch, epoch)
        self.assertEqual([(p.offset, p.consumer) for p in await store.pending("g")], [(2, "c1")])
        await store.release("g", "c1")
        entries = await store.readGroup("g", "c2", 10)
        self.assertEqual([(e.offset, e.content, e.deliveries) for e in entries], [(2, "b", 2), (3, "c", 1)])
        again = RedisStore(parseRedisURL(server.url))
        self.addCleanup(again.close)
        self.assertEqual((await again.open()).epoch, epoch)


class UnreachableTests(TestCase):
    """
    A Redis that cannot be used at start-up is reported in one line.
    """

    timeout = 20

    async def test_nothingListening(self) -> None:
        """
        No server at the address: open() fails at once, naming the address and the reason.
        """
        port = freePort()
        store = RedisStore(parseRedisURL(f"redis://127.0.0.1:{port}/0"))
        failure = await self.assertFailure(store.open(), RedisStoreError)
        message = str(failure)
        self.assertTrue(message.startswith(f"cannot reach Redis at 127.0.0.1:{port}: "), message)
        self.assertIn("refused", message)
        self.assertNotIn("\n", message)
        await store.close()
        failure = await self.assertFailure(store.append([("t", "a")]), RedisStoreError)
        self.assertIn("closed", str(failure))

    async def test_wrongPassword(self) -> None:
        """
        A server that refuses the password: open() fails with Redis's reason,
        never showing the password.
        """
        server = RedisServer(extra=("--requirepass", "right")).start()
        self.addCleanup(server.stop)
        store = RedisStore(parseRedisURL(f"redis://:wrong-secret@127.0.0.1:{server.port}/0"))
        failure = await self.assertFailure(store.open(), RedisStoreError)
        self.assertIn("auth", str(failure))
        self.assertNotIn("wrong-secret", str(failure))
        await store.close()
        good = RedisStore(parseRedisURL(f"redis://default:right@127.0.0.1:{server.port}/0"))
        self.addCleanup(good.close)
        await good.open()
        self.assertEqual(await good.append([("t", "a")]), [1])

    async def test_storeReady(self) -> None:
        """
        storeReady() opens a Redis store (msgqueue waits for it before listening)
        and reports an unreachable one; other stores are ready at once.
        """
        port = freePort()
        store = openStore(f"redis://127.0.0.1:{port}", reactor)
        await self.assertFailure(storeReady(store), RedisStoreError)
        await store.close()
        server = sharedServer()
        store = openStore(server.url, reactor)
        self.addCleanup(store.close)
        self.assertIsNone(await storeReady(store))
        self.assertTrue(store.epoch)
        self.assertIsNone(await storeReady(openStore("memory", reactor)))


class TLSTests(TestCase):
    """
    rediss:// verifies the server's certificate and host name.
    """

    timeout = 20

    async def setUp(self) -> None:
        self.certs = os.path.abspath(self.mktemp())
        makeDevelopmentCertificates(self.certs)
        self.tlsPort = freePort()
        self.server = RedisServer(extra=(
            "--tls-port", self.tlsPort, "--tls-cert-file", f"{self.certs}/server.crt",
            "--tls-key-file", f"{self.certs}/server.key", "--tls-ca-cert-file", f"{self.certs}/ca.crt",
            "--tls-auth-clients", "no",
        )).start()
        self.addCleanup(self.server.stop)

    async def test_verified(self) -> None:
        """
        A server whose certificate chains to the CA and names the host is used.
        """
        store = openStore(f"rediss://localhost:{self.tlsPort}/0", reactor, caPath=f"{self.certs}/ca.crt")
        self.addCleanup(store.close)
        await storeReady(store)
        self.assertEqual(await store.append([("t", "a")]), [1])

    async def test_otherCARefused(self) -> None:
        """
        A certificate from another CA is refused at open, with the reason.
        """
        other = os.path.abspath(self.mktemp())
        makeDevelopmentCertificates(other)
        store = openStore(f"rediss://localhost:{self.tlsPort}/0", reactor, caPath=f"{other}/ca.crt")
        failure = await self.assertFailure(storeReady(store), RedisStoreError)
        self.assertIn(f"cannot reach Redis at localhost:{self.tlsPort}", str(failure))
        await store.close()

    async def test_otherHostNameRefused(self) -> None:
        """
        A certificate that does not name the host connected to is refused.
        """
        # The certificate names localhost, 127.0.0.1 and ::1 only.
        creator = clientCreator("redis.example", f"{self.certs}/ca.crt")
        store = RedisStore(RedisAddress("127.0.0.1", self.tlsPort, tls=True), tlsCreator=creator)
        failure = await self.assertFailure(store.open(), RedisStoreError)
        self.assertNotIn("\n", str(failure))
        await store.close()


class ReplicaTests(TestCase):
    """
    minReplicas: an append is acknowledged once that many replicas have it.
    """

    timeout = 30

    async def test_waitForReplicas(self) -> None:
        """
        With a replica in sync, appends succeed; with none, they fail after the
        timeout, saying so, though the master stored them (a resend is skipped).
        """
        master = RedisServer().start()
        self.addCleanup(master.stop)
        store = RedisStore(parseRedisURL(master.url), minReplicas=1, replicaTimeout=0.3)
        self.addCleanup(store.close)
        await store.open()
        failure = await self.assertFailure(store.append([("t", "a")], "p", [1]), RedisStoreError)
        self.assertIn("only 0 of 1 Redis replicas", str(failure))
        replica = RedisServer(extra=("--replicaof", "127.0.0.1", master.port)).start()
        self.addCleanup(replica.stop)

        def inSync():
            info = replica.command("INFO", "replication")
            if "master_link_status:up" not in info:
                raise StoreError("replica not in sync yet")
            return store.append([("t", "a")], "p", [1])

        self.assertEqual(await eventually(inSync, what="the replica"), [None])
        self.assertEqual(await store.append([("t", "b")], "p", [2]), [2])
        self.assertEqual(replica.command("XLEN", STREAM), 2)

    async def test_handedOutOnlyOnceReplicated(self) -> None:
        """
        With minReplicas, an entry no replica has confirmed is not handed out: a
        fail-over may lose it, and the promoted replica would then give its offset
        to another entry, which consumers would drop as one they have seen.  Once a
        later append is confirmed, everything before it is handed out too.
        """
        master = RedisServer().start()
        self.addCleanup(master.stop)
        store = RedisStore(parseRedisURL(master.url), minReplicas=1, replicaTimeout=0.3)
        self.addCleanup(store.close)
        await store.open()
        await self.assertFailure(store.append([("t", "unconfirmed")], "p", [1]), RedisStoreError)
        self.assertEqual(await store.readGroup("g", "c1", 10), [])
        replica = RedisServer(extra=("--replicaof", "127.0.0.1", master.port)).start()
        self.addCleanup(replica.stop)

        def inSync():
            if "master_link_status:up" not in replica.command("INFO", "replication"):
                raise StoreError("replica not in sync yet")
            return store.append([("t", "confirmed")], "p", [2])

        # [None] when an attempt that timed out waiting for the replica had stored it:
        # the retry with the same producer number is then a duplicate (seen under load).
        self.assertIn(await eventually(inSync, what="the replica"), ([2], [None]))
        self.assertEqual([e.content for e in await store.readGroup("g", "c1", 10)], ["unconfirmed", "confirmed"])


class SentinelTests(TestCase):
    """
    redis+sentinel:// asks the Sentinels where the master is.
    """

    timeout = 30

    async def test_masterFound(self) -> None:
        """
        The master a Sentinel names is used; a master no Sentinel knows is
        reported in one line once discovery times out.
        """
        master = RedisServer().start()
        self.addCleanup(master.stop)
        sentinel = RedisServer(sentinelFor=("mymaster", master.port)).start()
        self.addCleanup(sentinel.stop)
        store = RedisStore(parseRedisURL(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/2"))
        self.addCleanup(store.close)
        await store.open()
        self.assertEqual(await store.append([("t", "a")]), [1])
        inDatabase2 = "redis.call('SELECT', 2) return redis.call('XLEN', KEYS[1])"
        self.assertEqual((master.command("EVAL", inDatabase2, 1, STREAM), master.command("XLEN", STREAM)), (1, 0))
        unknown = RedisStore(parseRedisURL(f"redis+sentinel://127.0.0.1:{sentinel.port}/other/0"), connectTimeout=0.5)
        failure = await self.assertFailure(unknown.open(), RedisStoreError)
        self.assertEqual(
            str(failure), f"cannot reach Redis at master other (Sentinels 127.0.0.1:{sentinel.port}): No master found for other"
        )
        await unknown.close()


class RedisSpecTests(SynchronousTestCase):
    """
    Redis URLs in --store.
    """

    def test_parse(self) -> None:
        """
        Host, port, database, user and password (percent-decoded), TLS, Sentinels.
        """
        self.assertEqual(parseRedisURL("redis://h"), RedisAddress("h", 6379, 0))
        self.assertEqual(
            parseRedisURL("rediss://u%40x:p%3Aw@h.example:7000/2"),
            RedisAddress("h.example", 7000, 2, "u@x", "p:w", True),
        )
        self.assertEqual(parseRedisURL("redis://:pw@[::1]:7/1"), RedisAddress("::1", 7, 1, None, "pw"))
        sentinel = parseRedisURL("redis+sentinel://a:1,b/mymaster/4")
        self.assertEqual((sentinel.sentinels, sentinel.masterName, sentinel.db), ((("a", 1), ("b", 26379)), "mymaster", 4))
        self.assertEqual(sentinel.describe(), "master mymaster (Sentinels a:1,b:26379)")
        self.assertNotIn("pw", repr(parseRedisURL("redis://:pw@h")))

    def test_bad(self) -> None:
        """
        Every malformed URL is a ValueError naming it.
        """
        for bad in (
            "redis://", "redis://h:x", "redis://h:0", "redis://h/db", "redis://a,b", "http://h",
            "redis://h?queue=x", "redis+sentinel://h", "redis+sentinel://h/", "redis+sentinel://h/m/x",
        ):
            with self.assertRaises(ValueError, msg=bad) as raised:
                parseRedisURL(bad)
            self.assertIn(bad, str(raised.exception))

    def test_storeSpec(self) -> None:
        """
        --store takes Redis URLs; openStore makes an unopened store; a CA file is
        for rediss:// only, and a missing one is named.
        """
        self.assertEqual(parseStoreSpec("redis://h:1/2"), ("redis", "redis://h:1/2"))
        self.assertEqual(parseStoreSpec("redis+sentinel://h/m"), ("redis", "redis+sentinel://h/m"))
        for bad in ("redis:h", "redis://h:x", "rediss:"):
            self.assertRaises(ValueError, parseStoreSpec, bad)
        store = openStore("redis://h:1/2", reactor)
        self.assertIsInstance(store, RedisStore)
        self.assertEqual(store.address, RedisAddress("h", 1, 2))
        self.assertRaises(StoreError, openStore, "redis://h", reactor, caPath="ca.crt")
        self.assertRaises(StoreError, openStore, "memory", reactor, caPath="ca.crt")
        with self.assertRaises(StoreError) as raised:
            openStore("rediss://h", reactor, caPath="/nonexistent/ca.crt")
        self.assertIn("/nonexistent/ca.crt", str(raised.exception))
