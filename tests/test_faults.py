"""
Fault injection (slow; CI runs it): real C{twistd} daemons killed, frozen, stopped
and starved of their store while clients publish and subscribe, with every message
accounted for by L{tests.checker.DeliveryChecker}.  Each scenario prints its figures
on a C{FIGURES <test>: {...}} line.

Nothing here sleeps to synchronise: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.checker import (
    DeliveryChecker,
    Key,
    PublishingClient,
    SubscribingClient,
    contentFor,
    parseContent,
    publishAll,
    stopAll,
)
from tests.daemons import Daemon, DaemonPipeline, startDaemon, startDaemons
from tests.helpers import Clients, nextJSON, waitFor, withTimeout


def storeIn(testCase: TestCase) -> str:
    """
    A SQLite store path in a fresh temporary folder (absolute: a restarted msgqueue
    must find the same file).
    """
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    return os.path.join(directory, "queue.sqlite3")


async def startPipeline(
    testCase: TestCase, store: str, subscribers: Sequence[Sequence[str]] = ((),),
    msgqueueArgs: Sequence[str] = (), publisherArgs: Sequence[str] = (),
) -> DaemonPipeline:
    """
    msgqueue on C{store}, one publisher (with C{publisherArgs}) and one subscriber
    per entry of C{subscribers}; fire once every link to msgqueue is open.
    """
    msgqueue = await startDaemon(testCase, "wsqueue-msgqueue", "--store", f"sqlite:{store}", *msgqueueArgs)
    queue = ("--queue", msgqueue.url)
    stages = await startDaemons(
        testCase, ("wsqueue-publisher", *queue, *publisherArgs),
        *[("wsqueue-subscriber", *queue, *args) for args in subscribers],
    )
    for stage in stages:
        await stage.waitForLinks()
    return DaemonPipeline(msgqueue, stages[:1], stages[1:])


def startPublishing(testCase: TestCase, publishers: Sequence[PublishingClient]) -> Deferred[list]:
    """
    Run the publishing clients (see L{publishAll}); stop them when the test ends.
    """
    testCase.addCleanup(stopAll, publishers)
    return publishAll(publishers)


async def streamTwoTopics(
    testCase: TestCase, pipeline, publishers: int, each: int, ackedFirst: int
) -> tuple[DeliveryChecker, list[PublishingClient]]:
    """
    One client subscribed to t0 and t1, then C{publishers} clients each publishing
    C{each} messages across both; return once C{ackedFirst} messages are acknowledged.
    """
    clients = Clients(testCase)
    checker = DeliveryChecker()
    await SubscribingClient.open(clients, checker, "both", pipeline.subscriber.port, ["t0", "t1"])
    streams = [
        PublishingClient(checker, clients, f"p{n}", pipeline.publisher.port, ["t0", "t1"], each)
        for n in range(publishers)
    ]
    startPublishing(testCase, streams)
    await waitFor(lambda: len(checker.acked) >= ackedFirst, 60, what=f"{ackedFirst} acks")
    return checker, streams


def resends(publisher: Daemon) -> list[int]:
    """
    How many messages the publisher resent to msgqueue after each reconnect (its log).
    """
    return [int(n) for n in re.findall(r"resending (\d+) unacknowledged", publisher.logText())]


@dataclass
class StoreSnapshot:
    """
    What msgqueue's SQLite file held at one moment, read by the test itself.

    @ivar entries: (offset, message) in offset order, the message as the checker
        names it (None for a content the checker did not write).
    @ivar position: the group's next fresh offset (None if the group does not exist).
    @ivar pending: the group's delivered and unacknowledged offsets.
    @ivar busy: how many of those are still assigned to a consumer.
    """

    entries: list[tuple[int, Key | None]]
    position: int | None
    pending: set[int]
    busy: int

    def handledByGroup(self) -> set[Key]:
        """
        What the group had delivered and had acknowledged: it is never delivered again.
        """
        assert self.position is not None, "the group does not exist"
        return {key for offset, key in self.entries if offset < self.position and offset not in self.pending}

    def stored(self) -> Counter[Key | None]:
        return Counter(key for _, key in self.entries)


def readStore(path: str, group: str | None = None) -> Deferred[StoreSnapshot]:
    """
    Read msgqueue's store in one read transaction, in a thread (WAL mode: msgqueue
    keeps writing meanwhile).
    """

    def read() -> StoreSnapshot:
        db = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            db.execute("BEGIN")
            entries = [(offset, parseContent(content)) for offset, content in
                       db.execute("SELECT offset, content FROM entries ORDER BY offset")]
            row = db.execute("SELECT next_offset FROM groups WHERE name = ?", (group,)).fetchone()
            pending = db.execute("SELECT offset, consumer FROM pending WHERE grp = ?", (group,)).fetchall()
            db.execute("COMMIT")
        finally:
            db.close()
        return StoreSnapshot(
            entries, row[0] if row else None, {offset for offset, _ in pending},
            sum(1 for _, consumer in pending if consumer),
        )

    return deferToThread(read)


async def readStoreWhen(
    path: str, group: str | None, condition: Callable[[StoreSnapshot], bool], what: str, timeout: float = 10.0
) -> StoreSnapshot:
    """
    Read the store until C{condition(snapshot)} holds; fail at the deadline.
    """
    deadline = reactor.seconds() + timeout
    while not condition(snapshot := await readStore(path, group)):
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for the store: {what}")
        await task.deferLater(reactor, 0.05, lambda: None)
    return snapshot


def unreadBytes(port: int) -> int:
    """
    How many bytes wait unread in the sockets of the process listening on C{port}
    (the receive queues of its accepted connections, from /proc/net/tcp).
    """
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                localPort = int(fields[1].rsplit(":", 1)[1], 16)
                if localPort == port and fields[3] == "01":  # ESTABLISHED
                    total += int(fields[4].split(":")[1], 16)
    return total


def residentMemory(pid: int) -> int:
    """
    The process's resident set size in bytes (VmRSS in /proc/<pid>/status).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def holdExclusiveLock(path: str, locked: Deferred, release: threading.Event, longest: float) -> float:
    """
    In a thread: take SQLite's exclusive lock on C{path}, fire C{locked} (on the
    reactor's thread), hold the lock until C{release} is set or C{longest} seconds
    pass; return how long it was held.
    """
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        start = time.monotonic()
        reactor.callFromThread(locked.callback, None)
        release.wait(longest)
        held = time.monotonic() - start
        db.execute("ROLLBACK")
    finally:
        db.close()
    return held


async def killAndRestart(daemon: Daemon, sig: int = signal.SIGKILL) -> None:
    """
    Send C{sig}, wait for the process to end, start it again with the same arguments.
    """
    daemon.kill(sig)
    await daemon.waitForExit()
    await daemon.restart()


async def waitForPublishers(publishers: Sequence[PublishingClient], timeout: float) -> str | None:
    """
    Wait for the (running) publishing clients to have an answer for every message;
    stop those that fail or are not done in time and say which, or return L{None}.
    """
    waiting = DeferredList([p.done for p in publishers], consumeErrors=True)
    # A timeout is not an error here: the clients that are not done are named below.
    await withTimeout(waiting, timeout, "the publishing clients").addErrback(lambda _: None)
    failed = [p for p in publishers if not p.done.called or p.failure is not None]
    for p in failed:
        p.stop()
    if not failed:
        return None
    return "publishing clients did not finish: " + ", ".join(
        f"{p.name} ({p.failure.getErrorMessage() if p.failure else f'no answer for {len(p.unanswered)}'})"
        for p in failed
    )


async def finish(
    testCase: TestCase, checker: DeliveryChecker, publishers: Sequence[PublishingClient], timeout: float,
    extra: Callable[[], dict] = dict,
) -> dict:
    """
    Wait for the (running) publishing clients, then for the subscribing clients to
    have what they are owed; print the figures with C{extra()} (also when something
    failed) and check them.
    """
    problem = await waitForPublishers(publishers, timeout)
    # Everything published has been stored by now: delivery takes seconds, not minutes.
    await checker.settle(30)
    figures = checker.show(testCase, **extra())
    if problem is not None:
        testCase.fail(problem)
    checker.assertClean(testCase, figures)
    return figures


class MsgQueueFaultTests(TestCase):
    """
    msgqueue killed and frozen under a stream of acknowledged messages.
    """

    timeout = 180

    async def test_killedThreeTimes(self) -> None:
        """
        msgqueue is killed with SIGKILL three times while three publishing clients
        send 10,000 messages (each time frozen first until the publisher has
        forwarded messages it reads no more), and restarted on the same store: every
        acknowledged message reaches each subscribing client of its topic once, in
        order (the publisher resends what was not acknowledged; msgqueue skips what
        it had stored, the subscriber what it had delivered).
        """
        store = storeIn(self)
        pipeline = await startPipeline(self, store, subscribers=[("--group", "a")])
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "both", pipeline.subscriber.port, ["t0", "t1"])
        await SubscribingClient.open(clients, checker, "t0", pipeline.subscriber.port, ["t0"])
        publishers = [
            PublishingClient(checker, clients, f"p{n}", pipeline.publisher.port, ["t0", "t1"], count)
            for n, count in enumerate((3334, 3333, 3333))
        ]
        startPublishing(self, publishers)
        msgqueue = pipeline.msgqueue
        killedAt = []
        for threshold in (2000, 4500, 7000):
            await waitFor(lambda threshold=threshold: len(checker.acked) >= threshold, 60, what=f"{threshold} acks")
            # Frozen first until the publisher's next batches wait unread in its socket,
            # so that each kill lands with messages in flight, wherever it froze.
            msgqueue.kill(signal.SIGSTOP)
            await waitFor(lambda: unreadBytes(msgqueue.port) >= 16384, 30, what="forwarded messages waiting")
            killedAt.append(len(checker.acked))
            await killAndRestart(msgqueue)
        figures = await finish(
            self, checker, publishers, 90, lambda: {"killedAtAcks": killedAt, "resends": resends(pipeline.publisher)}
        )
        self.assertEqual((figures["acked"], figures["errors"]), (10_000, 0))

    async def test_frozenLongerThanPingTimeout(self) -> None:
        """
        msgqueue is frozen with SIGSTOP mid-stream, every daemon pinging each second:
        publisher and subscriber find their link dead (their logs say it closed),
        and after SIGCONT they reconnect and nothing is lost.
        """
        store = storeIn(self)
        ping = ("--ping-interval", "1")
        pipeline = await startPipeline(
            self, store, subscribers=[("--group", "e", *ping)], msgqueueArgs=ping, publisherArgs=ping
        )
        stages = (pipeline.publisher, pipeline.subscriber)
        checker, publishers = await streamTwoTopics(self, pipeline, publishers=2, each=2500, ackedFirst=1000)

        marks = [stage.eventMark() for stage in stages]
        frozenAt = reactor.seconds()
        frozenAtAcks = len(checker.acked)
        pipeline.msgqueue.kill(signal.SIGSTOP)
        for stage, mark in zip(stages, marks):
            await stage.waitForEvents("link-closed", since=mark, timeout=15)
        detectedAfter = reactor.seconds() - frozenAt
        ackedWhileFrozen = len(checker.acked) - frozenAtAcks
        pipeline.msgqueue.kill(signal.SIGCONT)
        for stage, mark in zip(stages, marks):
            await stage.waitForLinks(since=mark, timeout=30)
        reconnectedAfter = reactor.seconds() - frozenAt

        figures = await finish(self, checker, publishers, 90, lambda: {
            "frozenAtAcks": frozenAtAcks, "linksClosedAfterSeconds": round(detectedAfter, 2),
            "linksOpenAgainAfterSeconds": round(reconnectedAfter, 2), "resends": resends(pipeline.publisher),
        })
        self.assertEqual((figures["acked"], figures["errors"]), (5000, 0))
        self.assertLess(ackedWhileFrozen, 600, "acks went on while msgqueue was frozen: was it?")


class PublisherFaultTests(TestCase):
    """
    The publisher killed under a stream of acknowledged messages.
    """

    timeout = 180

    async def test_killed(self) -> None:
        """
        The publisher is frozen mid-stream with messages it forwarded and msgqueue
        then stored (so their Acks are never passed on), killed with SIGKILL and
        restarted: its clients reconnect and resend what had no Ack.  Every
        acknowledged message arrives; the only duplicates are resent messages the old
        publisher had already passed to msgqueue (the new publisher is a new producer,
        so msgqueue cannot skip them).
        """
        store = storeIn(self)
        pipeline = await startPipeline(self, store, subscribers=[("--group", "b")])
        checker, publishers = await streamTwoTopics(self, pipeline, publishers=3, each=2000, ackedFirst=2500)
        # Catch the publisher with messages forwarded and not yet acknowledged:
        # msgqueue frozen until the publisher's next batches wait unread in its
        # socket, then the publisher frozen and msgqueue thawed.  msgqueue stores and
        # delivers them; their Acks never reach the publishing clients.
        msgqueue, publisher = pipeline.msgqueue, pipeline.publisher
        msgqueue.kill(signal.SIGSTOP)
        await waitFor(lambda: unreadBytes(msgqueue.port) >= 16384, 30, what="forwarded messages waiting for msgqueue")
        publisher.kill(signal.SIGSTOP)
        msgqueue.kill(signal.SIGCONT)
        receivedNotAcked = await waitFor(lambda: checker.watchers["both"].keys - checker.acked, 30,
                                         what="a message delivered but never acknowledged to its client")
        killedAt = len(checker.acked)
        await killAndRestart(pipeline.publisher)
        figures = await finish(
            self, checker, publishers, 90,
            lambda: {"killedAtAcks": killedAt, "deliveredNotAckedAtKill": len(receivedNotAcked),
                     "connections": [p.connections for p in publishers]},
        )
        self.assertEqual((figures["acked"], figures["errors"]), (6000, 0))
        self.assertGreater(figures["resent"], 0, "the kill hit no message in flight: nothing was tested")
        self.assertEqual([p.connections for p in publishers], [2, 2, 2])


class SubscriberFaultTests(TestCase):
    """
    The subscriber killed or stopped, then started again in the same consumer group
    with C{--resume-grace}, its clients subscribing again within the grace.
    """

    timeout = 180

    async def reopen(self, subscriber: Daemon, clients: Clients, checker: DeliveryChecker, name: str, expects):
        """
        Start C{subscriber} again and subscribe a new client C{name} to t0 and t1
        before the subscriber reads msgqueue (checked in its log: the grace held).
        """
        mark = subscriber.eventMark()
        await subscriber.restart()
        client = await SubscribingClient.open(clients, checker, name, subscriber.port, ["t0", "t1"], expects=expects)
        self.assertEqual(
            [event for event in subscriber.history[mark:] if event["event"] == "link-open"], [],
            "the subscriber read msgqueue before its clients were back: --resume-grace did not hold",
        )
        await subscriber.waitForLinks(since=mark)
        return client

    async def test_killed(self) -> None:
        """
        The subscriber is frozen (SIGSTOP) mid-stream until msgqueue has delivered it
        500 messages it does not acknowledge, then killed with SIGKILL and started
        again in the same group.  What it had delivered and acknowledged before dying
        is not delivered again (read from msgqueue's store once msgqueue has taken
        back what the dead consumer held); everything else that was acknowledged to
        the publishing clients reaches the new client, once and in order.

        A retention "anchor" group (a consumer that never acknowledges) keeps msgqueue
        from trimming, so the store snapshot names every message the group handled.
        """
        store = storeIn(self)
        pipeline = await startPipeline(self, store, subscribers=[("--group", "c", "--resume-grace", "3")])
        msgqueue, subscriber = pipeline.msgqueue, pipeline.subscriber
        clients = Clients(self)
        await clients.connect(msgqueue.port, "/popmsg?group=anchor&ack=explicit")
        checker = DeliveryChecker()
        before = await SubscribingClient.open(clients, checker, "before", subscriber.port, ["t0", "t1"])
        publishers = [PublishingClient(checker, clients, f"p{n}", pipeline.publisher.port, ["t0", "t1"], 2000)
                      for n in range(3)]
        startPublishing(self, publishers)
        watcher = checker.watchers["before"]
        await waitFor(lambda: len(watcher.keys) >= 2000, 60, what="2000 messages before the crash")

        # Frozen first, so that it dies holding messages msgqueue delivered to it and
        # it never acknowledged.
        subscriber.kill(signal.SIGSTOP)
        await readStoreWhen(store, "c", lambda snapshot: snapshot.busy >= 500, "500 messages in flight to it")
        mark = msgqueue.logMark()
        subscriber.kill(signal.SIGKILL)
        await subscriber.waitForExit()
        checker.cutOff("before")
        await msgqueue.waitForLog(re.compile(r"left /popmsg"), since=mark)
        # msgqueue takes back what the dead consumer held (on its writer thread).
        snapshot = await readStoreWhen(store, "c", lambda snapshot: snapshot.busy == 0, "group c released")
        self.assertEqual(snapshot.entries[0][0], 1, "msgqueue trimmed its store: the snapshot is incomplete")
        handled = snapshot.handledByGroup()
        receivedBefore = set(watcher.keys)

        after = await self.reopen(subscriber, clients, checker, "after", lambda key: key not in handled)
        highest: dict[str, int] = {}
        for publisher, seq in receivedBefore:
            highest[publisher] = max(seq, highest.get(publisher, 0))

        def extra() -> dict:
            received = checker.watchers["after"].keys
            return {
                "handledByGroupBeforeCrash": len(handled),
                "receivedBeforeCrash": len(receivedBefore),
                "pendingAtCrash": len(snapshot.pending),
                "handledButNeverReachedClient": len(handled - receivedBefore),
                "redeliveredAfterRestart": len(received & receivedBefore),
                "aboveHighestBeforeCrashMissing": sum(
                    1 for key in checker.acked if key[1] > highest.get(key[0], 0) and key not in received
                ),
            }

        figures = await finish(self, checker, publishers, 90, extra)
        self.assertEqual(figures["clients"]["after"]["notOwed"], 0, "a message the group had handled came again")
        self.assertEqual(figures["acked"], 6000)
        self.assertFalse(after.closed.called)
        self.assertTrue(before.closed.called)

    async def test_stoppedWhilePublishing(self) -> None:
        """
        The subscriber is stopped with SIGTERM; 5,000 messages are published while it
        is away; it is started again in the same group and its client subscribes
        within the grace: all 5,000 arrive, once each, in order.
        """
        store = storeIn(self)
        pipeline = await startPipeline(self, store, subscribers=[("--group", "d", "--resume-grace", "3")])
        subscriber = pipeline.subscriber
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "before", subscriber.port, ["t0", "t1"])
        warmup = PublishingClient(checker, clients, "warmup", pipeline.publisher.port, ["t0", "t1"], 300)
        await startPublishing(self, [warmup])
        self.assertTrue(await checker.settle(30), "the warm-up did not arrive")

        subscriber.kill(signal.SIGTERM)
        self.assertEqual(await subscriber.waitForExit(), 0)
        checker.cutOff("before")
        await startPublishing(
            self, [PublishingClient(checker, clients, f"d{n}", pipeline.publisher.port, ["t0", "t1"], 2500)
                   for n in range(2)],
        )
        whileAway = set(checker.acked) - {key for key in checker.acked if key[0] == "warmup"}

        await self.reopen(subscriber, clients, checker, "after", lambda key: key[0] != "warmup")
        figures = await finish(self, checker, [], 90, lambda: {"ackedWhileAway": len(whileAway)})
        self.assertEqual(len(whileAway), 5000)
        self.assertEqual(figures["clients"]["after"]["received"] - figures["clients"]["after"]["notOwed"], 5000)


    async def test_gracefulStopUnderTraffic(self) -> None:
        """
        (#8, item 1) 100 clients are subscribed while messages keep coming; the
        subscriber gets SIGTERM mid-stream, exits 0, starts again, and every client
        subscribes again within C{--resume-grace}.  Each person (their connection
        before the stop and the one after, one "group" for the checker) receives
        every acknowledged message exactly once: in particular those that reached
        the stopping subscriber after it began closing its clients, which it used to
        acknowledge to msgqueue although no client was left to receive them.
        """
        people = 100
        store = storeIn(self)
        pipeline = await startPipeline(self, store, subscribers=[("--group", "g", "--resume-grace", "6")])
        subscriber = pipeline.subscriber
        clients = Clients(self)
        checker = DeliveryChecker()

        async def subscribeEveryone(when: str) -> None:
            for first in range(0, people, 25):
                await DeferredList([
                    Deferred.fromCoroutine(SubscribingClient.open(
                        clients, checker, f"{when}{n}", subscriber.port, ["t0"], group=f"person{n}"))
                    for n in range(first, min(first + 25, people))
                ], fireOnOneErrback=True, consumeErrors=True)

        await subscribeEveryone("before")
        stream = PublishingClient(checker, clients, "p", pipeline.publisher.port, ["t0"], 1500, window=4, padding=20)
        startPublishing(self, [stream])
        await waitFor(lambda: len(checker.acked) >= 200, 30, what="200 messages before the stop")
        subscriber.kill(signal.SIGTERM)
        self.assertEqual(await subscriber.waitForExit(), 0)
        stoppedAt = len(checker.acked)
        mark = subscriber.eventMark()
        await subscriber.restart()
        await subscribeEveryone("after")
        self.assertEqual(
            [event for event in subscriber.history[mark:] if event["event"] == "link-open"], [],
            "the subscriber read msgqueue before its clients were back: --resume-grace did not hold",
        )
        figures = await finish(self, checker, [stream], 90, lambda: {"ackedWhenStopped": stoppedAt})
        self.assertEqual(figures["acked"], 1500)
        for n in range(people):
            self.assertEqual(figures["groups"][f"person{n}"]["lost"], 0)


class SlowConsumerTests(TestCase):
    """
    A subscribing client that stops reading.
    """

    timeout = 180
    # Room for a healthy reader in this busy test process to fall a burst behind
    # (msgqueue's batches reach the subscriber 32 KB at a time), still far below the
    # megabytes that pile up for a client that never reads.
    maxClientBuffer = 256 * 1024
    memoryBound = 150 * 1024 * 1024

    async def test_neverReads(self) -> None:
        """
        A client that never reads is closed with 1008 "slow consumer" once more than
        C{--max-client-buffer} (256 KiB) waits for it beyond the socket buffers, while
        another client of the same topic receives all 8,000 messages of 1 KB (8 MB)
        in order; the subscriber stays under 150 MB resident the whole time.
        """
        store = storeIn(self)
        pipeline = await startPipeline(
            self, store, subscribers=[("--group", "f", "--max-client-buffer", str(self.maxClientBuffer))]
        )
        subscriber = pipeline.subscriber
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "reader", subscriber.port, ["f"])
        stalled = await SubscribingClient.open(clients, DeliveryChecker(), "stalled", subscriber.port, ["f"])
        stalled.connection.transport.pauseProducing()

        rss = [residentMemory(subscriber.pid)]
        sampler = task.LoopingCall(lambda: rss.append(residentMemory(subscriber.pid)))
        sampler.start(0.1)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        mark = subscriber.logMark()
        publishers = [PublishingClient(checker, clients, "p0", pipeline.publisher.port, ["f"], 8000, padding=1000)]
        startPublishing(self, publishers)
        await subscriber.waitForLog(
            f"slow consumer, more than {self.maxClientBuffer} bytes waiting", since=mark, timeout=60
        )
        closedAtAcks = len(checker.acked)
        stalled.connection.transport.resumeProducing()
        code, reason = await withTimeout(stalled.closed, 10, "the slow consumer's close")

        def extra() -> dict:
            return {
                "slowConsumerClosedAtAcks": closedAtAcks, "slowConsumerClose": [code, reason],
                "slowConsumerReceived": len(stalled.checker.watchers["stalled"].received),
                "subscriberRssStartMB": round(rss[0] / 2**20, 1), "subscriberRssMaxMB": round(max(rss) / 2**20, 1),
            }

        figures = await finish(self, checker, publishers, 90, extra)
        sampler.stop()
        self.assertEqual((code, reason), (1008, "slow consumer"))
        self.assertEqual(figures["acked"], 8000)
        self.assertLess(max(rss), self.memoryBound, f"subscriber's resident memory peaked at {max(rss)} bytes")


    async def test_pingsNeverRead(self) -> None:
        """
        (#8, item 9) A client on /publish that sends 300,000 pings and never reads
        would make the publisher queue every pong (about 38 MB) outside any limit.
        It is closed once more than the per-connection bound (1 MiB) waits for it,
        the publisher's resident memory grows by less than 30 MB, and a client that
        reads publishes as usual meanwhile.
        """
        pipeline = await startPipeline(self, storeIn(self))
        publisher = pipeline.publisher
        clients = Clients(self)
        pinger = await clients.connect(publisher.port, "/publish")
        pinger.transport.pauseProducing()
        before = residentMemory(publisher.pid)
        rss = [before]
        sampler = task.LoopingCall(lambda: rss.append(residentMemory(publisher.pid)))
        sampler.start(0.1)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        mark = publisher.logMark()
        for burst in range(300):
            for _ in range(1000):
                pinger.sendPing(b"p" * 125)
            await task.deferLater(reactor, 0, lambda: None)
            if pinger.closed.called or "slow consumer" in publisher.logText(mark):
                break
        await publisher.waitForLog("slow consumer", since=mark, timeout=30)
        reader = await clients.connect(publisher.port, "/publish")
        reader.sendMessage(b'{"Topic": "t", "Content": "still here", "Id": 1}')
        self.assertEqual(await nextJSON(reader), {"Ack": 1})
        pinger.transport.resumeProducing()
        code, _ = await withTimeout(pinger.closed, 20, "the pinging client's close")
        sampler.stop()
        growth = max(rss) - before
        print(f"\nFIGURES test_pingsNeverRead: {json.dumps({'pingBursts': burst + 1, 'close': code, 'publisherRssGrowthMB': round(growth / 2**20, 1)})}")
        self.assertLess(growth, 30 * 2**20, f"the publisher grew by {growth} bytes")


class StoreFaultTests(TestCase):
    """
    msgqueue's store refuses to write.
    """

    timeout = 180

    async def test_lockedStore(self) -> None:
        """
        While another process holds an exclusive lock on msgqueue's SQLite file for
        longer than msgqueue's busy timeout (5 s), two clients keep publishing with
        Ids: some messages get an C{Error}; every message gets an Ack or an Error; and
        every acknowledged message is in the store afterwards.
        """
        store = storeIn(self)
        pipeline = await startPipeline(self, store, subscribers=())
        clients = Clients(self)
        checker = DeliveryChecker()
        publishers = [
            PublishingClient(checker, clients, f"p{n}", pipeline.publisher.port, ["g"], 1500) for n in range(2)
        ]
        startPublishing(self, publishers)
        await waitFor(lambda: len(checker.acked) >= 300, 60, what="300 acks")

        locked = Deferred()
        release = threading.Event()
        holding = deferToThread(holdExclusiveLock, store, locked, release, 15.0)
        self.addCleanup(lambda: release.set() or holding)
        await withTimeout(locked, 30, "the exclusive lock")
        lockedAtAcks = len(checker.acked)
        # Not an error if none comes: the assertion below says so, after the figures.
        await waitFor(lambda: checker.errors, 15, what="an Error while the store is locked").addErrback(lambda _: None)
        errorsWhileLocked = len(checker.errors)
        release.set()
        heldFor = await holding

        problem = await waitForPublishers(publishers, 60)
        stored = (await readStore(store)).stored()
        acked, errors = checker.acked, set(checker.errors)
        figures = checker.show(
            self, lockedAtAcks=lockedAtAcks, lockHeldSeconds=round(heldFor, 2), errorsWhileLocked=errorsWhileLocked,
            errorReasons=sorted(set(checker.errors.values())), stored=sum(stored.values()),
            ackedNotStored=len(acked - stored.keys()),
            ackedNotStoredSample=[f"{p} {s}" for p, s in sorted(acked - stored.keys())[:5]],
            erroredButStored=len(errors & stored.keys()), storedTwice=sum(1 for n in stored.values() if n > 1),
        )
        if problem is not None:
            self.fail(problem)
        self.assertEqual(figures["unanswered"], 0, "a message got neither an Ack nor an Error")
        self.assertGreater(errorsWhileLocked, 0, "no Error while the store was locked")
        self.assertEqual(figures["ackedNotStored"], 0, "messages acknowledged to their client are not in the store")

    async def test_resendAfterFailedStore(self) -> None:
        """
        msgqueue's part: a named producer's frame that could not be stored (the store
        locked past its busy timeout) gets an Error for each of its Ids; sent again
        once the store is writable, it is stored, not skipped as already stored.
        """
        store = storeIn(self)
        msgqueue = await startDaemon(self, "wsqueue-msgqueue", "--store", f"sqlite:{store}")
        clients = Clients(self)
        pusher = await clients.connect(msgqueue.port, "/pushmsg?producer=probe")
        frame = json.dumps([{"Id": seq, "Topic": "g", "Content": contentFor("probe", seq)} for seq in (1, 2, 3)])

        locked = Deferred()
        release = threading.Event()
        holding = deferToThread(holdExclusiveLock, store, locked, release, 15.0)
        self.addCleanup(lambda: release.set() or holding)
        await withTimeout(locked, 30, "the exclusive lock")
        pusher.sendMessage(frame.encode("utf-8"))
        whileLocked = [await nextJSON(pusher, timeout=15) for _ in range(3)]
        release.set()
        await holding
        pusher.sendMessage(frame.encode("utf-8"))
        afterwards = await nextJSON(pusher, timeout=15)
        stored = sorted(key for key in (await readStore(store)).stored() if key is not None)
        print(f"\nFIGURES test_resendAfterFailedStore: whileLocked={whileLocked} afterwards={afterwards} stored={stored}")
        self.assertEqual([reply.get("Id") for reply in whileLocked], [1, 2, 3], whileLocked)
        self.assertTrue(all("Error" in reply for reply in whileLocked), whileLocked)
        self.assertEqual(afterwards, {"Ack": 3})
        self.assertEqual(stored, [("probe", 1), ("probe", 2), ("probe", 3)], "acknowledged but not stored")


class DeliveryCheckerTests(TestCase):
    """
    The checker's own figures, on made-up traffic (fast: no daemons).
    """

    def checker(self, sent: int = 5, acked: Sequence[int] = (1, 2, 3, 4, 5)) -> DeliveryChecker:
        checker = DeliveryChecker()
        for seq in range(1, sent + 1):
            checker.sent("p", seq, "t")
        for seq in acked:
            checker.answered("p", {"Ack": seq})
        return checker

    def receive(self, checker: DeliveryChecker, name: str, *seqs: int, topic: str = "t", publisher: str = "p") -> None:
        for seq in seqs:
            checker.received(name, {"Topic": topic, "Content": contentFor(publisher, seq, 3), "Offset": seq})

    def test_clean(self) -> None:
        checker = self.checker()
        checker.watch("s", ["t"])
        self.receive(checker, "s", 1, 2, 3, 4, 5)
        figures = checker.report()["clients"]["s"]
        self.assertEqual((figures["owed"], figures["received"], figures["lost"]), (5, 5, 0))
        self.assertEqual(checker.problems(), [])
        self.assertTrue(checker.complete())

    def test_lostCountsOnlyAcknowledged(self) -> None:
        """
        A message without an Ack (or with an Error) is not owed; an acknowledged one is.
        """
        checker = self.checker(acked=(1, 2, 4))
        checker.answered("p", {"Error": "no", "Id": 5})
        checker.watch("s", ["t"])
        self.receive(checker, "s", 1, 2)
        figures = checker.report()
        self.assertEqual((figures["clients"]["s"]["lost"], figures["clients"]["s"]["lostSample"]), (1, ["p 4"]))
        self.assertEqual((figures["errors"], figures["unanswered"]), (1, 1))
        self.assertFalse(checker.complete())
        self.assertEqual(checker.problems(), ["client s: lost = 1"])

    def test_unexpected(self) -> None:
        """
        Never sent, unreadable, or on a topic other than the one it was sent on.
        """
        checker = self.checker()
        checker.watch("s", ["t", "u"])
        self.receive(checker, "s", 1, 2, 3, 4, 5)
        self.receive(checker, "s", 9)
        self.receive(checker, "s", 1, topic="u")
        checker.received("s", {"Topic": "t", "Content": "garbage"})
        self.assertEqual(checker.report()["clients"]["s"]["unexpected"], 3)

    def test_duplicates(self) -> None:
        """
        A duplicate of a message its client resent is explained; any other is not.
        """
        checker = self.checker()
        checker.wasResent("p", 2)
        checker.watch("s", ["t"])
        self.receive(checker, "s", 1, 2, 3, 2, 3, 4, 5)
        figures = checker.report()["clients"]["s"]
        self.assertEqual(
            (figures["duplicates"], figures["explainedDuplicates"], figures["unexplainedDuplicates"]), (2, 1, 1)
        )

    def test_orderViolations(self) -> None:
        """
        Per publisher, a first receipt below the highest so far, unless it was resent.
        """
        checker = self.checker()
        checker.sent("q", 1, "t")
        checker.answered("q", {"Ack": 1})
        checker.wasResent("p", 3)
        checker.watch("s", ["t"])
        self.receive(checker, "s", 2, 1, 4, 3, 5)
        self.receive(checker, "s", 1, publisher="q")
        self.assertEqual(checker.report()["clients"]["s"]["orderViolations"], 1)

    def test_group(self) -> None:
        """
        Members of one group are owed the stream between them.
        """
        checker = self.checker()
        checker.watch("a", ["t"], group="g")
        checker.watch("b", ["t"], group="g")
        self.receive(checker, "a", 1, 3)
        self.receive(checker, "b", 2, 3)
        figures = checker.report()
        self.assertIsNone(figures["clients"]["a"]["lost"])
        group = figures["groups"]["g"]
        self.assertEqual((group["lost"], group["lostSample"], group["unexplainedDuplicates"]), (2, ["p 4", "p 5"], 1))
        self.assertEqual(group["shares"], {"a": 2, "b": 2})

    def test_expectsAndCutOff(self) -> None:
        """
        A client owed part of the stream; a client cut off by a fault is owed nothing.
        """
        checker = self.checker()
        checker.watch("late", ["t"], expects=lambda key: key[1] > 2)
        checker.watch("gone", ["t"])
        self.receive(checker, "late", 2, 3, 4, 5)
        self.receive(checker, "gone", 1)
        checker.cutOff("gone")
        figures = checker.report()["clients"]
        self.assertEqual((figures["late"]["owed"], figures["late"]["lost"], figures["late"]["notOwed"]), (3, 0, 1))
        self.assertIsNone(figures["gone"]["lost"])
        self.assertEqual(checker.problems(), [])
