"""
Tests for the L{IMessageStore} implementations: one conformance suite that the
in-memory store and the SQLite store must both pass, plus what only SQLite promises
(surviving a restart, refusing a damaged file, committing on its writer thread).

The broker relies on the store's consumer-group semantics (every group gets every
entry, consumers of one group share them, released entries come back first) and on
its trimming: an entry must stay until every group has acknowledged it.
"""

from __future__ import annotations

import os

from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from wsqueue.store import Entry, IMessageStore, MemoryStore, PendingEntry
from wsqueue.store import memory as memoryModule
from wsqueue.store import sqlite as sqliteModule
from wsqueue.store.config import DEFAULT_STORE, StoreService, openStore, parseStoreSpec
from wsqueue.store.sqlite import SQLiteStore, StoreError, _Operation, runBatch


class StoreConformanceMixin:
    """
    What the broker relies on from every store.  Subclasses say how to make one.
    """

    def makeStore(self):
        raise NotImplementedError

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = self.makeStore()

    def append(self, *topics: str) -> list[int]:
        """
        Append one entry per topic (content C{"c-<topic>"}); return their offsets.
        """
        return self.successResultOf(self.store.append([(topic, f"c-{topic}") for topic in topics]))

    def read(self, group: str, consumer: str, count: int = 100) -> list[int]:
        """
        The offsets C{consumer} of C{group} is handed.
        """
        return [entry.offset for entry in self.successResultOf(self.store.readGroup(group, consumer, count))]

    def pending(self, group: str) -> list[PendingEntry]:
        return self.successResultOf(self.store.pending(group))

    def test_expiredDeliveriesGoBack(self) -> None:
        """
        Entries unacknowledged for longer than the ack wait go back to their group,
        to be handed out again first, with their delivery count going up.
        """
        self.append("a", "b")
        self.read("g", "c1", 1)
        self.clock.advance(10)
        self.read("g", "c1", 1)
        self.assertEqual(self.successResultOf(self.store.releaseExpired(5)), [("g", 1)])
        self.assertEqual(self.read("g", "c2"), [1])
        self.assertEqual([(p.offset, p.consumer, p.deliveries) for p in self.pending("g")], [(1, "c2", 2), (2, "c1", 1)])
        self.assertEqual(self.successResultOf(self.store.releaseExpired(5)), [])

    def test_maxDeliverDeadLetters(self) -> None:
        """
        An entry delivered maxDeliver times moves to the dead letters instead of
        being handed out again, and no longer holds the store back.
        """
        self.append("a", "b")
        for _ in range(2):
            self.read("g", "c1", 1)
            self.successResultOf(self.store.release("g", "c1"))
        entries = self.successResultOf(self.store.readGroup("g", "c1", 5, maxDeliver=2))
        self.assertEqual([e.offset for e in entries], [2])
        [letter] = self.successResultOf(self.store.deadLetters("g"))
        self.assertEqual((letter.group, letter.offset, letter.topic, letter.content, letter.deliveries), ("g", 1, "a", "c-a", 2))
        self.assertEqual(self.successResultOf(self.store.deadLetters()), [letter])
        self.assertEqual(self.successResultOf(self.store.deadLetters("other")), [])
        self.successResultOf(self.store.ack("g", [2]))
        self.assertEqual(self.store.retained, 0)

    def test_deadLettersDoNotShortenARead(self) -> None:
        """
        Dead letters do not count against a read: it is filled from the entries given
        back after them, so a short read means the group has nothing more now.
        """
        self.append("a", "b", "c", "d")
        self.read("g", "c1", 2)
        for _ in range(2):
            self.successResultOf(self.store.release("g", "c1"))
            self.read("g", "c1", 2)
        self.read("g", "c1", 2)
        self.successResultOf(self.store.release("g", "c1"))
        # Offsets 1 and 2 have been delivered 3 times, 3 and 4 once; all are given back.
        entries = self.successResultOf(self.store.readGroup("g", "c2", 2, maxDeliver=3))
        self.assertEqual([e.offset for e in entries], [3, 4])
        self.assertEqual([letter.offset for letter in self.successResultOf(self.store.deadLetters("g"))], [1, 2])

    def test_lateAckOfReleasedEntryIgnored(self) -> None:
        """
        An ack for an entry already given back to the group does not remove it: it
        will be handed out again.
        """
        self.append("a")
        self.read("g", "c1")
        self.successResultOf(self.store.release("g", "c1"))
        self.assertEqual(self.successResultOf(self.store.ack("g", [1])), 0)
        self.assertEqual(self.read("g", "c2"), [1])

    def test_retentionByCount(self) -> None:
        """
        Past maxMessages the oldest entries go, and each group is told how many
        entries it had not acknowledged were lost.
        """
        self.append("a", "b", "c", "d")
        self.read("slow", "c2", 1)
        self.read("fast", "c1")
        self.successResultOf(self.store.ack("fast", [1, 2, 3, 4]))
        self.assertEqual(self.successResultOf(self.store.applyRetention(2, None, None)), {"slow": 2})
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(self.read("slow", "c2"), [3, 4])
        self.assertEqual(self.pending("slow")[0].offset, 3)

    def test_retentionByBytesAndAge(self) -> None:
        """
        maxBytes keeps the newest entries that fit; maxAge drops entries stored longer ago.
        """
        self.append("a")
        self.clock.advance(100)
        self.append("b", "c")
        self.assertEqual(self.successResultOf(self.store.applyRetention(None, None, 50)), {})
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(self.successResultOf(self.store.applyRetention(None, 4, None)), {})
        self.assertEqual(self.store.retained, 1)
        self.assertEqual(self.read("g", "c1"), [3])
        self.assertEqual(self.successResultOf(self.store.applyRetention(None, None, None)), {})

    def test_groupExpiry(self) -> None:
        """
        Groups idle for longer than the expiry are removed (unless active) and stop
        holding entries back.
        """
        self.append("a")
        self.read("idle", "c1")
        self.read("busy", "c2")
        self.clock.advance(100)
        self.assertEqual(self.successResultOf(self.store.expireGroups(50, {"busy"})), ["idle"])
        self.assertEqual(self.successResultOf(self.store.expireGroups(50, {"busy"})), [])
        self.successResultOf(self.store.ack("busy", [1]))
        self.assertEqual(self.store.retained, 0)

    def test_resendSkipped(self) -> None:
        """
        A producer's messages numbered at or below its highest stored number are
        skipped (None offsets); new numbers in the same append are stored.
        """
        self.assertEqual(self.successResultOf(self.store.append([("t", "a"), ("t", "b")], "p1", [1, 2])), [1, 2])
        resent = self.successResultOf(self.store.append([("t", "a"), ("t", "b"), ("t", "c")], "p1", [1, 2, 3]))
        self.assertEqual(resent, [None, None, 3])
        self.assertEqual(self.store.retained, 3)
        self.assertEqual(self.read("g", "c1"), [1, 2, 3])

    def test_producersIndependent(self) -> None:
        """
        One producer's numbers say nothing about another's, and appends without a
        producer or without numbers are never skipped.
        """
        self.successResultOf(self.store.append([("t", "a")], "p1", [5]))
        self.assertEqual(self.successResultOf(self.store.append([("t", "b")], "p2", [1])), [2])
        self.assertEqual(self.successResultOf(self.store.append([("t", "c")], None, [1])), [3])
        self.assertEqual(self.successResultOf(self.store.append([("t", "d")], "p1")), [4])

    def test_interface(self) -> None:
        """
        The store provides every method and attribute of IMessageStore.
        """
        self.assertTrue(verifyObject(IMessageStore, self.store))

    def test_offsetsIncreaseFromOne(self) -> None:
        """
        Offsets start at 1 and increase by one per entry, across appends.
        """
        self.assertEqual(self.append("a", "b"), [1, 2])
        self.assertEqual(self.append("c"), [3])
        self.assertEqual(self.successResultOf(self.store.append([])), [])
        self.assertEqual(self.store.retained, 3)

    def test_entriesKeepTopicAndContent(self) -> None:
        """
        readGroup returns the appended topic and content with each offset.
        """
        self.append("a", "b")
        entries = self.successResultOf(self.store.readGroup("g", "c1", 10))
        self.assertEqual(entries, [Entry(1, "a", "c-a"), Entry(2, "b", "c-b")])

    def test_epoch(self) -> None:
        """
        The epoch is a non-empty string, different for each store.
        """
        other = MemoryStore()
        self.assertIsInstance(self.store.epoch, str)
        self.assertTrue(self.store.epoch)
        self.assertNotEqual(self.store.epoch, other.epoch)

    def test_newGroupStartsAtOldestRetained(self) -> None:
        """
        A group created after entries were appended gets them all, from the oldest.
        """
        self.append("a", "b", "c")
        self.assertEqual(self.read("g", "c1"), [1, 2, 3])

    def test_newGroupStartsAtOldestRetainedAfterTrim(self) -> None:
        """
        A group created after others trimmed the store starts at the oldest entry left.
        """
        self.append("a", "b", "c")
        self.read("g1", "c1", 2)
        self.successResultOf(self.store.ack("g1", [1, 2]))
        self.assertEqual(self.store.retained, 1)
        self.assertEqual(self.read("g2", "c1"), [3])

    def test_everyGroupGetsEveryEntry(self) -> None:
        """
        Two groups each receive every entry.
        """
        self.append("a", "b")
        self.assertEqual(self.read("g1", "c1"), [1, 2])
        self.assertEqual(self.read("g2", "c1"), [1, 2])
        self.append("c")
        self.assertEqual(self.read("g2", "c1"), [3])
        self.assertEqual(self.read("g1", "c1"), [3])

    def test_consumersOfOneGroupShare(self) -> None:
        """
        Consumers of one group share the entries: none is handed out twice.
        """
        self.append("a", "b", "c", "d")
        first = self.read("g", "c1", 2)
        second = self.read("g", "c2", 10)
        self.assertEqual(first, [1, 2])
        self.assertEqual(second, [3, 4])
        self.assertEqual(self.read("g", "c1"), [])

    def test_countLimits(self) -> None:
        """
        At most C{count} entries are handed out per read; the rest wait.
        """
        self.append("a", "b", "c")
        self.assertEqual(self.read("g", "c1", 1), [1])
        self.assertEqual(self.read("g", "c1", 0), [])
        self.assertEqual(self.read("g", "c1", 5), [2, 3])
        self.assertEqual(self.read("g", "c1", 5), [])

    def test_ackRemovesPending(self) -> None:
        """
        Acknowledged entries are no longer pending; ack fires with how many were.
        """
        self.append("a", "b", "c")
        self.read("g", "c1")
        self.assertEqual(self.successResultOf(self.store.ack("g", [1, 3])), 2)
        self.assertEqual(self.pending("g"), [PendingEntry(2, "c1", 1)])

    def test_ackCountsOnlyPending(self) -> None:
        """
        Acking entries that are not pending (twice, never read, unknown) counts nothing.
        """
        self.append("a", "b")
        self.read("g", "c1", 1)
        self.assertEqual(self.successResultOf(self.store.ack("g", [1, 1, 2, 99])), 1)
        self.assertEqual(self.successResultOf(self.store.ack("g", [1])), 0)

    def test_ackUnknownGroup(self) -> None:
        """
        Acking for a group that does not exist counts nothing and creates nothing.
        """
        self.append("a")
        self.assertEqual(self.successResultOf(self.store.ack("nobody", [1])), 0)
        self.assertEqual(self.pending("nobody"), [])
        self.assertEqual(self.store.retained, 1)

    def test_pendingListsConsumerAndDeliveries(self) -> None:
        """
        pending lists unacknowledged entries in offset order with consumer and delivery count.
        """
        self.append("a", "b", "c")
        self.read("g", "c1", 1)
        self.read("g", "c2", 2)
        self.assertEqual(
            self.pending("g"),
            [PendingEntry(1, "c1", 1), PendingEntry(2, "c2", 1), PendingEntry(3, "c2", 1)],
        )
        self.assertEqual(self.pending("other"), [])

    def test_releaseGivesEntriesBack(self) -> None:
        """
        Released entries are handed out again first, in offset order, with deliveries incremented.
        """
        self.append("a", "b", "c", "d", "e")
        self.read("g", "c1", 1)  # 1
        self.read("g", "c2", 1)  # 2
        self.read("g", "c1", 1)  # 3
        self.assertEqual(self.successResultOf(self.store.release("g", "c1")), 2)
        self.assertEqual(self.pending("g"), [PendingEntry(2, "c2", 1)])
        self.assertEqual(self.read("g", "c3", 3), [1, 3, 4])
        self.assertEqual(
            self.pending("g"),
            [PendingEntry(1, "c3", 2), PendingEntry(2, "c2", 1), PendingEntry(3, "c3", 2), PendingEntry(4, "c3", 1)],
        )

    def test_releasedEntriesLimitedByCount(self) -> None:
        """
        Redelivery respects count: released entries not handed out wait for the next read.
        """
        self.append("a", "b", "c")
        self.read("g", "c1")
        self.successResultOf(self.store.release("g", "c1"))
        self.assertEqual(self.read("g", "c2", 2), [1, 2])
        self.assertEqual(self.read("g", "c3", 2), [3])

    def test_releaseTwiceCountsOnce(self) -> None:
        """
        Releasing a consumer again gives back nothing more.
        """
        self.append("a")
        self.read("g", "c1")
        self.assertEqual(self.successResultOf(self.store.release("g", "c1")), 1)
        self.assertEqual(self.successResultOf(self.store.release("g", "c1")), 0)
        self.assertEqual(self.read("g", "c2"), [1])

    def test_releaseUnknownGroup(self) -> None:
        """
        Releasing in a group that does not exist gives back nothing.
        """
        self.assertEqual(self.successResultOf(self.store.release("nobody", "c1")), 0)

    def test_releasedEntriesAreKept(self) -> None:
        """
        Entries released and not yet redelivered are not trimmed.
        """
        self.append("a", "b")
        self.read("g", "c1")
        self.successResultOf(self.store.release("g", "c1"))
        self.successResultOf(self.store.ack("g", []))
        self.assertEqual(self.store.retained, 2)

    def test_trimOnlyWhenEveryGroupAcked(self) -> None:
        """
        An entry is dropped only once every group has acknowledged it.
        """
        self.append("a", "b", "c")
        self.read("g1", "c1")
        self.read("g2", "c1")
        self.successResultOf(self.store.ack("g1", [1, 2, 3]))
        self.assertEqual(self.store.retained, 3)
        self.successResultOf(self.store.ack("g2", [1]))
        self.assertEqual(self.store.retained, 2)
        self.successResultOf(self.store.ack("g2", [2, 3]))
        self.assertEqual(self.store.retained, 0)

    def test_trimStopsAtOldestPending(self) -> None:
        """
        Acking a later entry does not drop an earlier one still pending.
        """
        self.append("a", "b", "c")
        self.read("g", "c1")
        self.successResultOf(self.store.ack("g", [2, 3]))
        self.assertEqual(self.store.retained, 3)
        self.assertEqual(self.pending("g"), [PendingEntry(1, "c1", 1)])
        self.successResultOf(self.store.ack("g", [1]))
        self.assertEqual(self.store.retained, 0)

    def test_trimKeepsEntriesAGroupHasNotRead(self) -> None:
        """
        Entries a group has not read yet are kept even when another group acked them.
        """
        self.append("a", "b")
        self.read("g2", "c1", 0)  # g2 exists, has read nothing
        self.read("g1", "c1")
        self.successResultOf(self.store.ack("g1", [1, 2]))
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(self.read("g2", "c1"), [1, 2])

    def test_noGroupNothingTrimmed(self) -> None:
        """
        With no group, entries are kept for the first group that comes.
        """
        self.append("a", "b")
        self.successResultOf(self.store.ack("g", [1, 2]))
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(self.read("g", "c1"), [1, 2])

    def test_offsetsContinueAfterTrim(self) -> None:
        """
        Trimming does not reuse offsets, and later entries are still readable.
        """
        self.append("a", "b")
        self.read("g", "c1")
        self.successResultOf(self.store.ack("g", [1, 2]))
        self.assertEqual(self.append("c"), [3])
        self.assertEqual(self.successResultOf(self.store.readGroup("g", "c1", 5)), [Entry(3, "c", "c-c")])

    def test_close(self) -> None:
        """
        close fires with None.
        """
        self.assertIsNone(self.successResultOf(self.store.close()))


class MemoryStoreTests(StoreConformanceMixin, SynchronousTestCase):
    """
    L{MemoryStore} conforms.
    """

    def makeStore(self) -> MemoryStore:
        return MemoryStore(now=self.clock.seconds)


class SQLiteStoreTests(StoreConformanceMixin, SynchronousTestCase):
    """
    L{SQLiteStore} conforms (driven inline, without its writer thread).
    """

    def makeStore(self) -> SQLiteStore:
        self.path = self.mktemp() + ".sqlite3"
        store = SQLiteStore(self.path, runInline=True, now=self.clock.seconds)
        self.addCleanup(store.close)
        return store


class SQLiteDurabilityTests(SynchronousTestCase):
    """
    What only the SQLite store promises: it survives a restart and refuses a damaged file.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite3"

    def open(self) -> SQLiteStore:
        store = SQLiteStore(self.path, runInline=True)
        self.addCleanup(store.close)
        return store

    def test_restartResumesEverything(self) -> None:
        """
        After a restart the epoch, the offsets, each group's position, the producers'
        sequence numbers and unacknowledged entries are all still there; entries that
        were pending for the old process's consumers are handed out again first.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "a"), ("t", "b"), ("t", "c")], "p1", [5, 6, 7]))
        self.assertEqual([e.offset for e in self.successResultOf(store.readGroup("g", "old", 2))], [1, 2])
        self.successResultOf(store.ack("g", [1]))
        self.successResultOf(store.close())

        again = self.open()
        self.assertEqual(again.epoch, store.epoch)
        self.assertEqual(again.retained, 2)
        self.assertEqual(self.successResultOf(again.append([("t", "c"), ("t", "d")], "p1", [7, 8])), [None, 4])
        entries = self.successResultOf(again.readGroup("g", "new", 10))
        self.assertEqual([(e.offset, e.content) for e in entries], [(2, "b"), (3, "c"), (4, "d")])
        self.assertEqual([p.deliveries for p in self.successResultOf(again.pending("g"))], [2, 1, 1])

    def test_offsetsNeverReused(self) -> None:
        """
        Offsets keep increasing after every entry was trimmed and the store reopened.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "a")]))
        self.successResultOf(store.readGroup("g", "c", 1))
        self.successResultOf(store.ack("g", [1]))
        self.assertEqual(store.retained, 0)
        self.successResultOf(store.close())
        again = self.open()
        self.assertEqual(self.successResultOf(again.append([("t", "b")])), [2])

    def test_garbageFileRefused(self) -> None:
        """
        A file that is not a SQLite database is refused with one line naming it.
        """
        with open(self.path, "wb") as f:
            f.write(b"this is not a database" * 100)
        with self.assertRaises(StoreError) as raised:
            SQLiteStore(self.path, runInline=True)
        message = str(raised.exception)
        self.assertIn(self.path, message)
        self.assertNotIn("\n", message)

    def test_truncatedFileRefused(self) -> None:
        """
        A store file cut short (a disk or copy gone wrong) is detected at open.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "x" * 1000) for _ in range(500)]))
        self.successResultOf(store.close())
        size = os.path.getsize(self.path)
        with open(self.path, "r+b") as f:
            f.truncate(size // 2)
        self.assertRaises(StoreError, SQLiteStore, self.path, runInline=True)

    def test_unwritableFolder(self) -> None:
        """
        A store in a folder that cannot be created is refused with the reason.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        with self.assertRaises(StoreError) as raised:
            SQLiteStore(os.path.join(blocker, "store.sqlite3"), runInline=True)
        self.assertIn("cannot open store", str(raised.exception))

    def test_failedAppendRemembersNoSequence(self) -> None:
        """
        A producer's append that fails leaves no sequence number behind: its resend is
        stored, not skipped as a duplicate.
        """
        store = self.open()
        bad = _Operation("append", ([("t", None)], "p1", [1]))
        runBatch(store._database, [bad])
        self.assertIsNotNone(bad.failure)
        self.assertEqual(self.successResultOf(store.append([("t", "a")], "p1", [1])), [1])

    def test_failedOperationAlone(self) -> None:
        """
        An operation that fails inside a batch fails alone; the others commit.
        """
        store = self.open()
        good = _Operation("append", ([("t", "a")], None, None))
        bad = _Operation("append", ([("t", None)], None, None))
        runBatch(store._database, [good, bad])
        self.assertEqual(good.result, [1])
        self.assertIsNotNone(bad.failure)
        self.assertEqual(store._database.retained, 1)

    def test_closedStoreRefuses(self) -> None:
        """
        Operations on a closed store fail with StoreError instead of hanging.
        """
        store = self.open()
        self.successResultOf(store.close())
        self.failureResultOf(store.append([("t", "a")]), StoreError)
        self.assertIsNone(self.successResultOf(store.close()))


class SQLiteWriterThreadTests(TestCase):
    """
    The SQLite store's writer thread, with the real reactor.
    """

    timeout = 20

    def open(self) -> SQLiteStore:
        from twisted.internet import reactor

        store = SQLiteStore(self.mktemp() + ".sqlite3", callFromThread=reactor.callFromThread)
        self.addCleanup(store.close)
        return store

    async def test_groupCommit(self) -> None:
        """
        Operations queued while a transaction commits share the next one, and each
        Deferred fires (on the reactor thread) only after its commit.
        """
        batches = []
        original = runBatch

        def recordingBatch(database, operations):
            batches.append(len(operations))
            return original(database, operations)

        self.patch(sqliteModule, "runBatch", recordingBatch)
        store = self.open()
        results = await gatherResults([store.append([("t", str(i))]) for i in range(50)])
        self.assertEqual(results, [[i] for i in range(1, 51)])
        self.assertEqual(sum(batches), 50)
        self.assertLess(len(batches), 50)
        self.assertEqual(store.retained, 50)

    async def test_closeFinishesQueuedWork(self) -> None:
        """
        close() lets queued operations commit before the file is closed.
        """
        store = self.open()
        appended = store.append([("t", "last")])
        await store.close()
        self.assertEqual(await appended, [1])
        reopened = SQLiteStore(store.path, runInline=True)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.retained, 1)

    def test_damagedFileAtOpen(self) -> None:
        """
        Opening on the writer thread reports a damaged file to the caller.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"garbage" * 1000)
        self.assertRaises(StoreError, SQLiteStore, path, callFromThread=lambda *a: None)


class StoreConfigTests(SynchronousTestCase):
    """
    The --store option.
    """

    def test_parse(self) -> None:
        """
        'memory' and 'sqlite:PATH' are understood; anything else is a ValueError.
        """
        self.assertEqual(parseStoreSpec("memory"), ("memory", None))
        self.assertEqual(parseStoreSpec("sqlite:/a/b.db"), ("sqlite", "/a/b.db"))
        self.assertEqual(parseStoreSpec(DEFAULT_STORE), ("sqlite", "./wsqueue-data/msgqueue.sqlite3"))
        for bad in ("sqlite:", "sqlite", "redis:x", ""):
            self.assertRaises(ValueError, parseStoreSpec, bad)

    def test_open(self) -> None:
        """
        openStore makes the store the spec names; StoreService closes it on stop.
        """
        self.assertIsInstance(openStore("memory", None), MemoryStore)
        path = self.mktemp() + ".sqlite3"
        calls = []
        store = openStore(f"sqlite:{path}", type("R", (), {"callFromThread": lambda self, *a: calls.append(a)})())
        self.assertIsInstance(store, SQLiteStore)
        service = StoreService(store)
        service.startService()
        service.stopService()
        self.assertTrue(store.closed)


class MemoryProducerBoundTests(SynchronousTestCase):
    def test_oldestProducerForgotten(self) -> None:
        """
        The memory store keeps the numbers of the most recently active
        MAX_PRODUCERS_REMEMBERED producers only (bounded memory).
        """
        self.patch(memoryModule, "MAX_PRODUCERS_REMEMBERED", 2)
        store = MemoryStore()
        for producer, seq in (("p1", 1), ("p2", 1), ("p1", 2), ("p3", 1)):
            store.append([("t", "x")], producer, [seq])
        self.assertEqual(self.successResultOf(store.append([("t", "x")], "p1", [2])), [None])
        self.assertEqual(self.successResultOf(store.append([("t", "x")], "p2", [1])), [5])
