"""
Store faults with real C{twistd} daemons (slow; CI runs it): a full disk and
recovery once space is freed, a write-ahead log cut short after kill -9, a flipped
byte in a stored message, a poison message with neighbours in its window, and an
absent consumer group filling the queue.  Each scenario prints its figures on a
C{FIGURES <test>: {...}} line.

The full-disk test mounts a small tmpfs itself (root, or CAP_SYS_ADMIN), and fails
with a plain message where that is not allowed.  Nothing here sleeps to
synchronise: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys

from twisted.internet import reactor, task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.checker import DeliveryChecker, PublishingClient, SubscribingClient, contentFor
from tests.daemons import runProcess, startDaemon
from tests.helpers import Clients, nextJSON, waitFor
from tests.test_faults import finish, readStoreWhen, startPipeline, startPublishing, storeIn, waitForPublishers
from wsqueue.client import ClientProtocol
from wsqueue.store.sqlite import COMMITTED_SUFFIX, readDeadLetters

DAMAGED = re.compile(r"failed their checksum \(offsets (\d+)")
"""What msgqueue logs when an entry fails its checksum."""


def mountTmpfs(testCase: TestCase, size: str) -> str:
    """
    A fresh tmpfs of C{size} (e.g. C{"4m"}), unmounted when the test ends (after its
    daemons are gone: cleanups run last-added first).
    """
    path = os.path.abspath(testCase.mktemp())
    os.makedirs(path)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            check=False, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        testCase.fail(
            "the full-disk test mounts a small tmpfs and needs root (or CAP_SYS_ADMIN) for it: "
            f"mount said {result.stderr.strip() or result.returncode!r}"
        )
    testCase.addCleanup(unmount, path)
    return path


def unmount(path: str) -> None:
    if subprocess.run(["umount", path], check=False, capture_output=True, timeout=10).returncode != 0:
        subprocess.run(["umount", "-l", path], check=False, capture_output=True, timeout=10)


def fillDisk(folder: str, leave: int) -> str:
    """
    Write a filler file that leaves about C{leave} bytes free in C{folder}'s file
    system; return its path (deleting it frees the space).
    """
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    filler = os.path.join(folder, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def readCommitted(store: str) -> int:
    """
    The highest committed offset that msgqueue's side file records for C{store}.
    """
    with open(store + COMMITTED_SUFFIX) as f:
        return int(f.read().split()[1])


def cutShort(path: str, fraction: float) -> int:
    """
    Truncate C{path} to C{fraction} of its length (a failing disk, a bad copy);
    return the length it had.
    """
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))
    return size


def flipByte(path: str, text: str, at: int) -> int:
    """
    Change byte C{at} of the one place C{text} is stored in C{path} (a flipped bit
    on disk); return where that place is.
    """
    with open(path, "r+b") as f:
        data = f.read()
        where = data.index(text.encode())
        assert data.find(text.encode(), where + 1) == -1, f"{text!r} is stored twice"
        f.seek(where + at)
        f.write(bytes([data[where + at] ^ 0x01]))
    return where


def deadLetters(store: str, group: str) -> Deferred[list[dict]]:
    """
    The dead letters of C{group}, as C{wsqueue-deadletters} prints them (run as an
    operator would, read-only while msgqueue runs).
    """

    async def run() -> list[dict]:
        code, output = await runProcess([sys.executable, "-m", "wsqueue.deadletters", store, "--group", group])
        assert code == 0, output
        return [json.loads(line) for line in output.splitlines() if line.startswith("{")]

    return Deferred.fromCoroutine(run())


def deadLetterCount(store: str, group: str) -> Deferred[int]:
    """
    How many dead letters C{group} has, read from the store in a thread (cheaper
    than the command, for polling).
    """

    def read() -> int:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
        try:
            return len(readDeadLetters(db, group))
        finally:
            db.close()

    return deferToThread(read)


TIMEOUT = object()


async def frameWithin(connection: ClientProtocol, seconds: float):
    """
    The next frame (L{None} once closed), or L{TIMEOUT} if none comes within C{seconds}.
    """
    waiting = connection.frames.get()
    timer = reactor.callLater(seconds, waiting.cancel)
    try:
        return await waiting
    except CancelledError:
        return TIMEOUT
    finally:
        if timer.active():
            timer.cancel()


class FullDiskTests(TestCase):
    """
    msgqueue's store on a file system that fills up, then gets room again.
    """

    timeout = 90

    async def test_fullThenFreed(self) -> None:
        """
        On a 16 MB tmpfs filled up but for 256 KB: once the disk is full, publishing
        clients get Errors (600 of them, more than --max-queued: each used to count
        as stored), never false Acks; msgqueue keeps running; once the
        filler is deleted new messages are acknowledged and delivered again without
        a restart (no "msgqueue is full" for ever, and delivery resumes by
        itself), nothing acknowledged is lost, and msgqueue's log summarises the
        repeated store errors instead of a line per message.
        """
        folder = mountTmpfs(self, "16m")
        store = os.path.join(folder, "queue.sqlite3")
        pipeline = await startPipeline(
            self, store, subscribers=[("--group", "full")], msgqueueArgs=("--max-queued", "500"),
        )
        msgqueue = pipeline.msgqueue
        pid = msgqueue.pid
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "reader", pipeline.subscriber.port, ["f"])
        filler = fillDisk(folder, 256 * 1024)
        publishers = [PublishingClient(checker, clients, "p0", pipeline.publisher.port, ["f"], 4000, padding=400)]
        startPublishing(self, publishers)
        await waitFor(lambda: len(checker.errors) >= 600, 30, what="600 Errors from the full disk")
        ackedBeforeRoom = len(checker.acked)
        errorsBeforeRoom = len(checker.errors)
        sentBeforeRoom = publishers[0].next - 1
        os.remove(filler)

        def extra() -> dict:
            log = msgqueue.logText()
            return {
                "ackedBeforeRoom": ackedBeforeRoom, "errorsBeforeRoom": errorsBeforeRoom,
                "sentBeforeRoom": sentBeforeRoom, "errorReasons": sorted(set(checker.errors.values())),
                "ackedAfterRoom": sum(1 for _, seq in checker.acked if seq > sentBeforeRoom),
                "lastError": max(seq for _, seq in checker.errors),
                "msgqueueErrorLines": len(re.findall(r"#error\]", log)),
                "msgqueueLogBytes": len(log), "publisherLogBytes": len(pipeline.publisher.logText()),
            }

        figures = await finish(self, checker, publishers, 60, extra)
        self.assertEqual(msgqueue.pid, pid)
        self.assertTrue(msgqueue.running, "msgqueue stopped")
        self.assertGreater(errorsBeforeRoom, 500, "more failed appends than --max-queued: each used to count")
        # Messages in flight when space came back may still be refused; the rest not.
        self.assertEqual(figures["ackedAfterRoom"], 4000 - sentBeforeRoom, figures)
        self.assertLessEqual(figures["msgqueueErrorLines"], 10)


class DamagedStoreTests(TestCase):
    """
    A store damaged behind msgqueue's back.
    """

    timeout = 90

    async def pushAll(self, port: int, count: int) -> None:
        """
        Push C{count} messages (contents as L{contentFor} makes them for "p0") on a
        named producer's /pushmsg link, waiting for each frame's Ack.
        """
        clients = Clients(self)
        pusher = await clients.connect(port, "/pushmsg?producer=p0")
        for first in range(1, count + 1, 100):
            frame = [{"Id": seq, "Topic": "t", "Content": contentFor("p0", seq, 50)}
                     for seq in range(first, min(first + 100, count + 1))]
            pusher.sendMessage(json.dumps(frame).encode())
            self.assertEqual(await nextJSON(pusher), {"Ack": frame[-1]["Id"]})
        await clients.closeAll()

    async def test_cutWriteAheadLog(self) -> None:
        """
        msgqueue killed with SIGKILL holding 3,000 acknowledged messages in its
        write-ahead log, which is then cut to a third: msgqueue refuses to start,
        with one line naming the side file, what is missing and how to accept the
        loss; once the side file is deleted it starts with what is left.
        """
        store = storeIn(self)
        msgqueue = await startDaemon(self, "wsqueue-msgqueue", "--store", f"sqlite:{store}")
        await self.pushAll(msgqueue.port, 3000)
        # The side file is written at most every 0.1 s while appends come (and when
        # the writer is idle that long): it may lag the last tenth of a second.
        await waitFor(lambda: readCommitted(store) == 3000, 5, what="offset 3000 in the side file")
        msgqueue.kill(signal.SIGKILL)
        await msgqueue.waitForExit()
        walSize = cutShort(store + "-wal", 1 / 3)
        msgqueue.spawn()
        code = await msgqueue.waitForExit()
        lines = [line for line in msgqueue.output.splitlines() if line.strip()]
        figures = {"walBytes": walSize, "cutTo": walSize // 3, "exit": code, "output": lines}
        print(f"\nFIGURES test_cutWriteAheadLog: {json.dumps(figures)}")
        self.assertEqual(code, 1)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("offsets up to 3000 were committed", lines[0])
        self.assertIn(f"delete {store}{COMMITTED_SUFFIX}", lines[0])
        os.remove(store + COMMITTED_SUFFIX)
        await msgqueue.restart()

    async def test_flippedByte(self) -> None:
        """
        One byte of one stored message's content is changed in the file while
        msgqueue is stopped (cleanly: the main file holds everything): after the
        restart that message is never delivered, msgqueue's log names its offset,
        and its neighbours are delivered; the checker counts it, and only it, lost.
        """
        store = storeIn(self)
        msgqueue = await startDaemon(self, "wsqueue-msgqueue", "--store", f"sqlite:{store}")
        publisher = await startDaemon(self, "wsqueue-publisher", "--queue", msgqueue.url)
        await publisher.waitForLinks()
        clients = Clients(self)
        checker = DeliveryChecker()
        await PublishingClient(checker, clients, "p0", publisher.port, ["t"], 100, padding=50).run()
        self.assertEqual(len(checker.acked), 100)
        msgqueue.kill(signal.SIGTERM)
        self.assertEqual(await msgqueue.waitForExit(), 0)
        walLeft = os.path.getsize(store + "-wal") if os.path.exists(store + "-wal") else 0
        self.assertEqual(walLeft, 0, "a clean stop left data in the write-ahead log")
        flipByte(store, contentFor("p0", 50, 50), len("p0 50 ") + 10)
        await msgqueue.restart()
        subscriber = await startDaemon(self, "wsqueue-subscriber", "--queue", msgqueue.url, "--group", "g",
                                       "--resume-grace", "3")
        await SubscribingClient.open(clients, checker, "reader", subscriber.port, ["t"])
        await subscriber.waitForLinks()
        named = await msgqueue.waitForLog(DAMAGED)
        await checker.settle(10)
        figures = checker.show(self, damagedOffsetsLogged=named, walBytesAfterCleanStop=walLeft)
        reader = figures["clients"]["reader"]
        self.assertEqual((reader["lost"], reader["lostSample"]), (1, ["p0 50"]))
        self.assertEqual(named, ["50"])
        self.assertEqual((reader["received"], reader["unexpected"], reader["orderViolations"]), (99, 0, 0))
        self.assertEqual(reader["unexplainedDuplicates"], 0)
        [letter] = await deadLetters(store, "g")
        self.assertEqual((letter["Offset"], letter["Deliveries"], letter["Damaged"]), (50, 0, True))


class PoisonConsumer:
    """
    A raw C{/popmsg?ack=explicit} consumer that processes messages in order,
    acknowledges them once no more arrive for a moment (or every 20), and drops its
    connection, unacknowledged, whenever it receives the poison message.
    """

    def __init__(self, testCase: TestCase, checker: DeliveryChecker, port: int, poison: str) -> None:
        self.clients = Clients(testCase)
        self.checker = checker
        self.port = port
        self.poison = poison
        self.seen: set[int] = set()
        self.connections = 0
        self.poisonReceived = 0
        checker.watch("consumer", ["t"])

    async def run(self, done) -> None:
        while not done():
            connection = await self.clients.connect(self.port, "/popmsg?group=poison&ack=explicit")
            self.connections += 1
            unacked, count = None, 0
            while True:
                payload = await frameWithin(connection, 0.02 if unacked is not None else 0.2)
                if payload is TIMEOUT:
                    if unacked is not None:
                        connection.sendMessage(json.dumps({"Ack": unacked}).encode())
                        unacked, count = None, 0
                    if done():
                        break
                    continue
                if payload is None:
                    break
                frame = json.loads(payload)
                if frame["Content"] == self.poison:
                    self.poisonReceived += 1
                    connection.dropConnection(abort=True)
                    await connection.closed
                    break
                if frame["Offset"] not in self.seen:
                    self.seen.add(frame["Offset"])
                    self.checker.received("consumer", frame)
                unacked = frame["Offset"]
                count += 1
                if count >= 20:
                    connection.sendMessage(json.dumps({"Ack": unacked}).encode())
                    unacked, count = None, 0
        await self.clients.closeAll()


class PoisonTests(TestCase):
    timeout = 90

    async def test_poisonWithNeighbours(self) -> None:
        """
        60 messages, the 25th a poison that makes its consumer disconnect each time
        it receives it, all in one window: after --max-deliver 2 deliveries alone
        it is the only dead letter (read with wsqueue-deadletters while msgqueue
        runs), and every neighbour reaches the consumer.
        """
        store = storeIn(self)
        msgqueue = await startDaemon(self, "wsqueue-msgqueue", "--store", f"sqlite:{store}", "--max-deliver", "2")
        publisher = await startDaemon(self, "wsqueue-publisher", "--queue", msgqueue.url)
        await publisher.waitForLinks()
        checker = DeliveryChecker()
        clients = Clients(self)
        await PublishingClient(checker, clients, "p0", publisher.port, ["t"], 60, padding=10).run()
        consumer = PoisonConsumer(self, checker, msgqueue.port, contentFor("p0", 25, 10))
        dead = [0]

        def finished() -> bool:
            return len(consumer.seen) >= 59 and dead[0] > 0

        running = Deferred.fromCoroutine(consumer.run(finished))
        deadline = reactor.seconds() + 45
        while not finished():
            self.assertLess(reactor.seconds(), deadline, f"not done: {len(consumer.seen)} received, {dead[0]} dead")
            dead[0] = await deadLetterCount(store, "poison")
            await task.deferLater(reactor, 0.1, lambda: None)
        await running
        letters = await deadLetters(store, "poison")
        figures = checker.show(
            self, consumerConnections=consumer.connections, poisonReceived=consumer.poisonReceived,
            deadLetters=[(d["Offset"], d["Deliveries"], d["Content"][:6]) for d in letters],
        )
        [letter] = letters
        self.assertEqual((letter["Content"], letter["Deliveries"]), (contentFor("p0", 25, 10), 4))
        self.assertEqual(consumer.poisonReceived, 4)
        result = figures["clients"]["consumer"]
        self.assertEqual((result["lost"], result["lostSample"]), (1, ["p0 25"]))
        self.assertEqual((result["unexpected"], result["orderViolations"], result["duplicates"]), (0, 0, 0))


class AbsentGroupTests(TestCase):
    timeout = 90

    async def test_absentGroupFillsTheQueue(self) -> None:
        """
        A group that connected once and left, then 3,000 messages published through
        a msgqueue with --max-queued 300 and --max-group-backlog 100: publishing
        clients get an Ack for every message (no Error, no dropped link), the live
        subscriber's client gets them all, and the absent group's losses are logged.
        """
        store = storeIn(self)
        pipeline = await startPipeline(
            self, store, subscribers=[("--group", "live")],
            msgqueueArgs=("--max-queued", "300", "--max-group-backlog", "100"),
        )
        clients = Clients(self)
        absent = await clients.connect(pipeline.msgqueue.port, "/popmsg?group=absent&ack=explicit")
        await readStoreWhen(store, "absent", lambda snapshot: snapshot.position is not None, "group absent created")
        absent.sendClose(1000)
        await absent.closed
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "live", pipeline.subscriber.port, ["t0", "t1"])
        publishers = [PublishingClient(checker, clients, f"p{n}", pipeline.publisher.port, ["t0", "t1"], 1500)
                      for n in range(2)]
        startPublishing(self, publishers)
        problem = await waitForPublishers(publishers, 60)
        drops = await pipeline.msgqueue.waitForLog(
            re.compile(r"group absent has no consumer connected .* dropped its (\d+) oldest"))

        def extra() -> dict:
            return {"absentDropLines": len(drops), "absentDropped": sum(int(n) for n in drops),
                    "linkClosures": len(re.findall("link to msgqueue at .* closed", pipeline.publisher.logText()))}

        await checker.settle(30)
        figures = checker.show(self, **extra())
        if problem is not None:
            self.fail(problem)
        checker.assertClean(self, figures)
        self.assertEqual((figures["acked"], figures["errors"]), (3000, 0))
        self.assertEqual(figures["linkClosures"], 0)
        self.assertGreater(figures["absentDropped"], 0)

