"""
Tests for the L{IMessageStore} implementations: one conformance suite that the
in-memory store and the SQLite store must both pass, plus what only SQLite promises
(surviving a restart, refusing a damaged file, committing on its writer thread).

The broker relies on the store's consumer-group semantics (every group gets every
entry, consumers of one group share them, released entries come back first) and on
its trimming: an entry must stay until every group has acknowledged it.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sqlite3
import threading

from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from wsqueue.store import Entry, IMessageStore, MemoryStore, PendingEntry
from wsqueue.store import memory as memoryModule
from wsqueue.store import sqlite as sqliteModule
from wsqueue.store.config import DEFAULT_STORE, StoreService, openStore, parseStoreSpec
from wsqueue.store.redis import RedisStore, parseRedisURL
from wsqueue.store.sqlite import COMMITTED_SUFFIX, SQLiteStore, StoreError, _Operation, runBatch

from .helpers import waitFor
from .redisserver import sharedServer

SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (offset INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, content TEXT NOT NULL,
                      stored REAL NOT NULL);
CREATE TABLE groups (name TEXT PRIMARY KEY, next_offset INTEGER NOT NULL, last_active REAL NOT NULL);
CREATE TABLE pending (grp TEXT NOT NULL, offset INTEGER NOT NULL, consumer TEXT NOT NULL,
                      deliveries INTEGER NOT NULL, delivered REAL NOT NULL, PRIMARY KEY (grp, offset)) WITHOUT ROWID;
CREATE TABLE producers (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE dead_letters (grp TEXT NOT NULL, offset INTEGER NOT NULL, topic TEXT NOT NULL, content TEXT NOT NULL,
                           deliveries INTEGER NOT NULL, at REAL NOT NULL);
INSERT INTO meta VALUES ('epoch', 'old-epoch'), ('schema', '1');
"""
"""A store file as wsqueue 0.1 wrote it (schema 1: no checksums)."""


class FullDisk:
    """
    A SQLite connection that fails like a full disk when told to: a statement
    starting with C{failing} raises C{database or disk is full} after SQLite has
    rolled the whole transaction back by itself, as it does for SQLITE_FULL.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.failing: str | None = None
        self.failures = 0

    def _check(self, sql: str) -> None:
        if self.failing is not None and sql.lstrip().upper().startswith(self.failing):
            self.failures += 1
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args):
        self._check(sql)
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        self._check(sql)
        return self.db.executemany(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def rowCount(path: str) -> int:
    """
    How many entries the store file holds, read with a connection of its own.
    """
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        db.close()


class StoreConformanceMixin:
    """
    What the broker relies on from every store.  Subclasses say how to make one
    (C{makeStore} may return a Deferred or a coroutine for a store that must
    connect first).  The tests are coroutines, so that a store answering over the
    network (Redis) runs the very same suite as those that answer at once.
    """

    def makeStore(self, historyKeep: int = 0):
        raise NotImplementedError

    async def setUp(self) -> None:
        self.clock = Clock()
        await self.useStore()

    async def useStore(self, historyKeep: int = 0) -> None:
        store = self.makeStore(historyKeep=historyKeep)
        if inspect.isawaitable(store):
            store = await store
        self.store = store

    async def consumeAll(self) -> None:
        """
        One group reads and acknowledges everything stored.
        """
        offsets = await self.read("g", "c", 1000)
        await self.store.ack("g", offsets)

    async def historyOffsets(self, pattern: str, after: int, limit: int = 100) -> tuple[list[int], bool]:
        history = await self.store.history(pattern, after, limit)
        self.assertEqual(history.epoch, self.store.epoch)
        return [entry.offset for entry in history.entries], history.complete

    async def test_historyByTopic(self) -> None:
        """
        The newest historyKeep entries stay after every group has them, and a
        history read gives a topic's entries above an offset, in order, with
        their contents, and says it is all of them.
        """
        await self.useStore(historyKeep=10)
        await self.append("a", "b", "a", "c", "a")
        await self.consumeAll()
        self.assertEqual((self.store.retained, self.store.backlog), (5, 0))
        history = await self.store.history("a", 0, 10)
        self.assertEqual([(entry.offset, entry.topic, entry.content) for entry in history.entries],
                         [(1, "a", "c-a"), (3, "a", "c-a"), (5, "a", "c-a")])
        self.assertEqual((history.latest, history.complete), (5, True))
        self.assertEqual(await self.historyOffsets("a", 3), ([5], True))
        self.assertEqual(await self.historyOffsets("a", 5), ([], True))
        self.assertEqual(await self.historyOffsets("nothing", 0), ([], True))

    async def test_historyPatterns(self) -> None:
        await self.useStore(historyKeep=10)
        await self.append("news.eu", "news.us", "sport", "news.eu.fr", "news.eu")
        self.assertEqual(await self.historyOffsets("news.*", 0), ([1, 2, 5], True))
        self.assertEqual(await self.historyOffsets("news.>", 1), ([2, 4, 5], True))
        self.assertEqual(await self.historyOffsets("*.eu", 0), ([1, 5], True))
        self.assertEqual(await self.historyOffsets(">", 3), ([4, 5], True))

    async def test_historyIncomplete(self) -> None:
        """
        Not all of it: more than the limit, entries older than historyKeep gone,
        or dropped by retention.
        """
        await self.useStore(historyKeep=3)
        await self.append("a", "a", "a", "a", "a")
        self.assertEqual((await self.store.history("a", 0, 3)).complete, False)
        await self.consumeAll()
        self.assertEqual((self.store.retained, self.store.backlog), (3, 0))
        self.assertEqual((await self.historyOffsets("a", 0))[1], False)
        self.assertEqual(await self.historyOffsets("a", 2), ([3, 4, 5], True))
        await self.store.applyRetention(1, None, None)
        self.assertEqual((await self.historyOffsets("a", 2))[1], False)
        self.assertEqual(await self.historyOffsets("a", 4), ([5], True))

    async def test_retainedBytes(self) -> None:
        """
        The size of what the store holds, as --retention-max-bytes measures it.
        """
        await self.append("ab", "c")  # "ab" + "c-ab", "c" + "c-c"
        self.assertEqual(self.store.retainedBytes, 10)
        await self.consumeAll()
        self.assertEqual((self.store.retained, self.store.retainedBytes), (0, 0))

    async def test_groupLags(self) -> None:
        """
        Each group's lag: the stored entries it has never been handed.
        """
        await self.append("a", "b", "c", "d")
        await self.read("g", "c", 1)
        await self.read("h", "c", 4)
        self.assertEqual(await self.store.groupLags(), {"g": 3, "h": 0})
        await self.append("e")
        self.assertEqual(await self.store.groupLags(), {"g": 4, "h": 1})

    async def test_backlogWithoutHistory(self) -> None:
        """
        The backlog counts what a group still needs, not what is kept for history
        (msgqueue's flow control counts it).
        """
        await self.useStore(historyKeep=10)
        await self.append("a", "b", "c", "d")
        await self.read("g", "c", 4)
        await self.store.ack("g", [1, 2])
        self.assertEqual((self.store.retained, self.store.backlog), (4, 2))

    async def append(self, *topics: str) -> list[int]:
        """
        Append one entry per topic (content C{"c-<topic>"}); return their offsets.
        """
        return await self.store.append([(topic, f"c-{topic}") for topic in topics])

    async def read(self, group: str, consumer: str, count: int = 100) -> list[int]:
        """
        The offsets C{consumer} of C{group} is handed.
        """
        return [entry.offset for entry in await self.store.readGroup(group, consumer, count)]

    async def pending(self, group: str) -> list[PendingEntry]:
        return await self.store.pending(group)

    async def readEntries(self, group: str, consumer: str, count: int = 100, maxDeliver: int | None = None) -> list[Entry]:
        return await self.store.readGroup(group, consumer, count, maxDeliver)

    async def dies(self, group: str, consumer: str, count: int = 100, maxDeliver: int | None = None) -> list[int]:
        """
        C{consumer} reads up to C{count} entries and dies without acknowledging any:
        the offsets it was handed, which go back to the group.
        """
        offsets = [entry.offset for entry in await self.readEntries(group, consumer, count, maxDeliver)]
        await self.store.release(group, consumer)
        return offsets

    async def deadOffsets(self, group: str | None = None) -> list[int]:
        return [letter.offset for letter in await self.store.deadLetters(group)]

    async def test_expiredDeliveriesGoBack(self) -> None:
        """
        Entries unacknowledged for longer than the ack wait go back to their group,
        to be handed out again first, with their delivery count going up.
        """
        await self.append("a", "b")
        await self.read("g", "c1", 1)
        self.clock.advance(10)
        await self.read("g", "c1", 1)
        self.assertEqual(await self.store.releaseExpired(5), [("g", 1)])
        self.assertEqual(await self.read("g", "c2"), [1])
        self.assertEqual([(p.offset, p.consumer, p.deliveries) for p in await self.pending("g")], [(1, "c2", 2), (2, "c1", 1)])
        self.assertEqual(await self.store.releaseExpired(5), [])

    async def test_maxDeliverDeadLetters(self) -> None:
        """
        An entry delivered alone maxDeliver times moves to the dead letters instead
        of being handed out again, and no longer holds the store back; its two
        batch deliveries before it was isolated do not count.
        """
        await self.append("a", "b")
        self.assertEqual(await self.dies("g", "c1", 1, maxDeliver=2), [1])
        self.assertEqual(await self.dies("g", "c1", 1, maxDeliver=2), [1])
        self.assertEqual(await self.dies("g", "c1", 5, maxDeliver=2), [1])
        self.assertEqual(await self.dies("g", "c1", 5, maxDeliver=2), [1])
        self.assertEqual(await self.deadOffsets(), [])
        entries = await self.readEntries("g", "c1", 5, maxDeliver=2)
        self.assertEqual([e.offset for e in entries], [2])
        [letter] = await self.store.deadLetters("g")
        self.assertEqual(
            (letter.group, letter.offset, letter.topic, letter.content, letter.deliveries, letter.damaged),
            ("g", 1, "a", "c-a", 4, False),
        )
        self.assertEqual(await self.store.deadLetters(), [letter])
        self.assertEqual(await self.store.deadLetters("other"), [])
        await self.store.ack("g", [2])
        self.assertEqual(self.store.retained, 0)

    async def test_deadLettersDoNotShortenARead(self) -> None:
        """
        Dead letters do not count against a read: it is filled from the entries after
        them, so a short read means the group has nothing more now.
        """
        await self.append("a", "b", "c", "d")
        await self.dies("g", "c1", 2)
        await self.dies("g", "c1", 2)
        # 1 and 2 came back twice: each goes alone, 2 to a consumer while c1 holds 1.
        self.assertEqual(await self.read("g", "c1"), [1])
        self.assertEqual(await self.read("g", "c2"), [2])
        await self.store.release("g", "c1")
        await self.store.release("g", "c2")
        entries = await self.readEntries("g", "c3", 2, maxDeliver=1)
        self.assertEqual([e.offset for e in entries], [3, 4])
        self.assertEqual(await self.deadOffsets("g"), [1, 2])

    async def test_deliveriesCounted(self) -> None:
        """
        Each entry handed out carries its delivery count, this delivery included.
        """
        await self.append("a", "b")
        self.assertEqual([e.deliveries for e in await self.readEntries("g", "c1", 1)], [1])
        await self.store.release("g", "c1")
        self.assertEqual([(e.offset, e.deliveries) for e in await self.readEntries("g", "c2")], [(1, 2), (2, 1)])
        self.assertEqual([(e.offset, e.deliveries) for e in await self.readEntries("other", "c1")], [(1, 1), (2, 1)])

    async def test_firstRedeliveryIsABatch(self) -> None:
        """
        Entries given back once (an ordinary disconnect) come back together, with
        new entries behind them.
        """
        await self.append(*"abcde")
        self.assertEqual(await self.dies("g", "c1", 3), [1, 2, 3])
        self.assertEqual(await self.read("g", "c2", 10), [1, 2, 3, 4, 5])

    async def test_secondRedeliveryOneAtATime(self) -> None:
        """
        Entries given back a second time are handed out one at a time, oldest
        first, each only once the consumer holds nothing else (here: has
        acknowledged the one before).
        """
        await self.append(*"abcd")
        await self.dies("g", "c1", 3)
        await self.dies("g", "c1", 3)
        for offset in (1, 2, 3):
            if offset < 3:
                self.assertEqual(await self.read("g", "c2", 10), [offset])
                self.assertEqual(await self.read("g", "c2", 10), [])
            else:
                self.assertEqual(await self.readEntries("g", "c2", 10), [Entry(3, "c", "c-c", 3)])
            await self.store.ack("g", [offset])
        self.assertEqual(await self.read("g", "c2", 10), [4])

    async def test_isolatedOnlyToAConsumerHoldingNothing(self) -> None:
        """
        An entry that must go alone is not handed to a consumer that holds other
        entries of the group (a failure there would be blamed on it), and nothing
        else is handed out in the meantime; a consumer holding nothing takes it.
        """
        await self.append(*"abcd")
        self.assertEqual(await self.read("g", "busy", 1), [1])
        self.assertEqual(await self.dies("g", "c1", 1), [2])
        self.assertEqual(await self.dies("g", "c1", 1), [2])
        self.assertEqual(await self.read("g", "busy", 5), [])
        self.assertEqual(await self.read("g", "free", 5), [2])
        self.assertEqual(await self.pending("g"), [PendingEntry(1, "busy", 1), PendingEntry(2, "free", 3)])

    async def test_poisonWindow(self) -> None:
        """
        A consumer that dies on receiving offset 10 in a window of 50 (each
        consumer acknowledges everything it received alone and survived): every
        other entry is acknowledged, only 10 is dead-lettered, after maxDeliver
        deliveries alone.
        """
        await self.append(*[f"t{i}" for i in range(1, 61)])
        acked: list[int] = []
        attempts = 0
        while attempts < 200:
            attempts += 1
            consumer = f"c{attempts}"
            entries = await self.readEntries("g", consumer, 50, maxDeliver=3)
            offsets = [e.offset for e in entries]
            if not offsets:
                break
            if 10 in offsets:
                await self.store.release("g", consumer)
                continue
            acked.extend(offsets)
            await self.store.ack("g", offsets)
        self.assertEqual(sorted(acked), [i for i in range(1, 61) if i != 10])
        [letter] = await self.store.deadLetters("g")
        self.assertEqual((letter.offset, letter.deliveries), (10, 5))
        self.assertEqual(self.store.retained, 0)

    async def test_expiredFollowTheSameRule(self) -> None:
        """
        Entries given back by the ack wait are isolated and dead-lettered like those
        of a consumer that left: a window that expires twice comes back one entry
        at a time, and only the entry never acknowledged alone is dead-lettered.
        """
        await self.append("a", "b", "c")
        for _ in range(2):
            await self.read("g", "slow", 3)
            self.clock.advance(10)
            self.assertEqual(len(await self.store.releaseExpired(5)), 3)
        self.assertEqual(await self.read("g", "slow", 3), [1])
        await self.store.ack("g", [1])
        for _ in range(2):
            self.assertEqual(await self.read("g", "slow", 3), [2])
            self.clock.advance(10)
            self.assertEqual(await self.store.releaseExpired(5), [("g", 2)])
        self.assertEqual(await self.readEntries("g", "slow", 3, maxDeliver=2), [Entry(3, "c", "c-c", 3)])
        self.assertEqual(await self.deadOffsets("g"), [2])

    async def test_lateAckOfReleasedEntryIgnored(self) -> None:
        """
        An ack for an entry already given back to the group does not remove it: it
        will be handed out again.
        """
        await self.append("a")
        await self.read("g", "c1")
        await self.store.release("g", "c1")
        self.assertEqual(await self.store.ack("g", [1]), 0)
        self.assertEqual(await self.read("g", "c2"), [1])

    async def test_retentionByCount(self) -> None:
        """
        Past maxMessages the oldest entries go, and each group is told how many
        entries it had not acknowledged were lost.
        """
        await self.append("a", "b", "c", "d")
        await self.read("slow", "c2", 1)
        await self.read("fast", "c1")
        await self.store.ack("fast", [1, 2, 3, 4])
        self.assertEqual(await self.store.applyRetention(2, None, None), {"slow": 2})
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(await self.read("slow", "c2"), [3, 4])
        self.assertEqual((await self.pending("slow"))[0].offset, 3)

    async def test_retentionByBytesAndAge(self) -> None:
        """
        maxBytes keeps the newest entries that fit; maxAge drops entries stored longer ago.
        """
        await self.append("a")
        self.clock.advance(100)
        await self.append("b", "c")
        self.assertEqual(await self.store.applyRetention(None, None, 50), {})
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(await self.store.applyRetention(None, 4, None), {})
        self.assertEqual(self.store.retained, 1)
        self.assertEqual(await self.read("g", "c1"), [3])
        self.assertEqual(await self.store.applyRetention(None, None, None), {})

    async def test_groupExpiry(self) -> None:
        """
        Groups idle for longer than the expiry are removed (unless active) and stop
        holding entries back.
        """
        await self.append("a")
        await self.read("idle", "c1")
        await self.read("busy", "c2")
        self.clock.advance(100)
        self.assertEqual(await self.store.expireGroups(50, {"busy"}), ["idle"])
        self.assertEqual(await self.store.expireGroups(50, {"busy"}), [])
        await self.store.ack("busy", [1])
        self.assertEqual(self.store.retained, 0)

    async def test_resendSkipped(self) -> None:
        """
        A producer's messages numbered at or below its highest stored number are
        skipped (None offsets); new numbers in the same append are stored.
        """
        self.assertEqual(await self.store.append([("t", "a"), ("t", "b")], "p1", [1, 2]), [1, 2])
        resent = await self.store.append([("t", "a"), ("t", "b"), ("t", "c")], "p1", [1, 2, 3])
        self.assertEqual(resent, [None, None, 3])
        self.assertEqual(self.store.retained, 3)
        self.assertEqual(await self.read("g", "c1"), [1, 2, 3])

    async def test_producersIndependent(self) -> None:
        """
        One producer's numbers say nothing about another's, and appends without a
        producer or without numbers are never skipped.
        """
        await self.store.append([("t", "a")], "p1", [5])
        self.assertEqual(await self.store.append([("t", "b")], "p2", [1]), [2])
        self.assertEqual(await self.store.append([("t", "c")], None, [1]), [3])
        self.assertEqual(await self.store.append([("t", "d")], "p1"), [4])

    async def test_interface(self) -> None:
        """
        The store provides every method and attribute of IMessageStore, and has found
        no damaged entry.
        """
        self.assertTrue(verifyObject(IMessageStore, self.store))
        self.assertEqual(self.store.damagedEntries, 0)

    async def test_trimGroupBacklog(self) -> None:
        """
        An absent group whose backlog (pending, given back, never read) exceeds the
        bound loses its oldest entries down to it, and is told how many; a group
        with a consumer connected, or within the bound, keeps everything.
        """
        await self.append(*"abcdefgh")
        await self.read("absent", "gone", 3)
        await self.store.ack("absent", [2])
        await self.store.release("absent", "gone")
        await self.read("present", "here", 0)
        await self.read("small", "s", 6)
        await self.store.ack("small", [1, 2, 3, 4, 5, 6])
        lost = await self.store.trimGroupBacklog(4, {"present"})
        self.assertEqual(lost, {"absent": 3})
        self.assertEqual(await self.read("absent", "back", 10), [5, 6, 7, 8])
        self.assertEqual(await self.read("present", "here", 10), [1, 2, 3, 4, 5, 6, 7, 8])
        self.assertEqual(await self.store.trimGroupBacklog(4, set()), {"present": 4})
        self.assertEqual(self.store.retained, 4)

    async def test_trimGroupBacklogPendingFirst(self) -> None:
        """
        Pending entries are older than those never read: they go first, and the
        trimmed store no longer holds what no group needs.
        """
        await self.append(*"abcdef")
        await self.read("g", "c", 4)
        self.assertEqual(await self.store.trimGroupBacklog(3, set()), {"g": 3})
        self.assertEqual(await self.pending("g"), [PendingEntry(4, "c", 1)])
        self.assertEqual(await self.read("g", "c2"), [5, 6])
        self.assertEqual(self.store.retained, 3)
        self.assertEqual(await self.store.trimGroupBacklog(0, set()), {"g": 3})
        self.assertEqual(self.store.retained, 0)
        self.assertEqual(await self.append("g"), [7])

    async def test_offsetsIncreaseFromOne(self) -> None:
        """
        Offsets start at 1 and increase by one per entry, across appends.
        """
        self.assertEqual(await self.append("a", "b"), [1, 2])
        self.assertEqual(await self.append("c"), [3])
        self.assertEqual(await self.store.append([]), [])
        self.assertEqual(self.store.retained, 3)

    async def test_entriesKeepTopicAndContent(self) -> None:
        """
        readGroup returns the appended topic and content with each offset.
        """
        await self.append("a", "b")
        entries = await self.store.readGroup("g", "c1", 10)
        self.assertEqual(entries, [Entry(1, "a", "c-a"), Entry(2, "b", "c-b")])

    async def test_anyTextKept(self) -> None:
        """
        Any text a client may send comes back as it was: quotes, backslashes,
        slashes, control characters and NUL, line and paragraph separators, text
        outside the Basic Multilingual Plane, and empty content.
        """
        texts = ['"q" \\ / \u00e9', "\x00\x01\n\t", "\u2028\u2029", "\U0001f389 \u65e5\u672c", ""]
        offsets = await self.store.append([(f"t{i}", text) for i, text in enumerate(texts)])
        entries = await self.store.readGroup("g", "c1", 10)
        self.assertEqual([(e.offset, e.topic, e.content) for e in entries],
                         [(offset, f"t{i}", text) for i, (offset, text) in enumerate(zip(offsets, texts))])

    async def test_epoch(self) -> None:
        """
        The epoch is a non-empty string, different for each store.
        """
        other = MemoryStore()
        self.assertIsInstance(self.store.epoch, str)
        self.assertTrue(self.store.epoch)
        self.assertNotEqual(self.store.epoch, other.epoch)

    async def test_newGroupStartsAtOldestRetained(self) -> None:
        """
        A group created after entries were appended gets them all, from the oldest.
        """
        await self.append("a", "b", "c")
        self.assertEqual(await self.read("g", "c1"), [1, 2, 3])

    async def test_newGroupStartsAtOldestRetainedAfterTrim(self) -> None:
        """
        A group created after others trimmed the store starts at the oldest entry left.
        """
        await self.append("a", "b", "c")
        await self.read("g1", "c1", 2)
        await self.store.ack("g1", [1, 2])
        self.assertEqual(self.store.retained, 1)
        self.assertEqual(await self.read("g2", "c1"), [3])

    async def test_everyGroupGetsEveryEntry(self) -> None:
        """
        Two groups each receive every entry.
        """
        await self.append("a", "b")
        self.assertEqual(await self.read("g1", "c1"), [1, 2])
        self.assertEqual(await self.read("g2", "c1"), [1, 2])
        await self.append("c")
        self.assertEqual(await self.read("g2", "c1"), [3])
        self.assertEqual(await self.read("g1", "c1"), [3])

    async def test_consumersOfOneGroupShare(self) -> None:
        """
        Consumers of one group share the entries: none is handed out twice.
        """
        await self.append("a", "b", "c", "d")
        first = await self.read("g", "c1", 2)
        second = await self.read("g", "c2", 10)
        self.assertEqual(first, [1, 2])
        self.assertEqual(second, [3, 4])
        self.assertEqual(await self.read("g", "c1"), [])

    async def test_countLimits(self) -> None:
        """
        At most C{count} entries are handed out per read; the rest wait.
        """
        await self.append("a", "b", "c")
        self.assertEqual(await self.read("g", "c1", 1), [1])
        self.assertEqual(await self.read("g", "c1", 0), [])
        self.assertEqual(await self.read("g", "c1", 5), [2, 3])
        self.assertEqual(await self.read("g", "c1", 5), [])

    async def test_ackRemovesPending(self) -> None:
        """
        Acknowledged entries are no longer pending; ack fires with how many were.
        """
        await self.append("a", "b", "c")
        await self.read("g", "c1")
        self.assertEqual(await self.store.ack("g", [1, 3]), 2)
        self.assertEqual(await self.pending("g"), [PendingEntry(2, "c1", 1)])

    async def test_ackCountsOnlyPending(self) -> None:
        """
        Acking entries that are not pending (twice, never read, unknown) counts nothing.
        """
        await self.append("a", "b")
        await self.read("g", "c1", 1)
        self.assertEqual(await self.store.ack("g", [1, 1, 2, 99]), 1)
        self.assertEqual(await self.store.ack("g", [1]), 0)

    async def test_ackUnknownGroup(self) -> None:
        """
        Acking for a group that does not exist counts nothing and creates nothing.
        """
        await self.append("a")
        self.assertEqual(await self.store.ack("nobody", [1]), 0)
        self.assertEqual(await self.pending("nobody"), [])
        self.assertEqual(self.store.retained, 1)

    async def test_pendingListsConsumerAndDeliveries(self) -> None:
        """
        pending lists unacknowledged entries in offset order with consumer and delivery count.
        """
        await self.append("a", "b", "c")
        await self.read("g", "c1", 1)
        await self.read("g", "c2", 2)
        self.assertEqual(
            await self.pending("g"),
            [PendingEntry(1, "c1", 1), PendingEntry(2, "c2", 1), PendingEntry(3, "c2", 1)],
        )
        self.assertEqual(await self.pending("other"), [])

    async def test_releaseGivesEntriesBack(self) -> None:
        """
        Released entries are handed out again first, in offset order, with deliveries incremented.
        """
        await self.append("a", "b", "c", "d", "e")
        await self.read("g", "c1", 1)  # 1
        await self.read("g", "c2", 1)  # 2
        await self.read("g", "c1", 1)  # 3
        self.assertEqual(await self.store.release("g", "c1"), 2)
        self.assertEqual(await self.pending("g"), [PendingEntry(2, "c2", 1)])
        self.assertEqual(await self.read("g", "c3", 3), [1, 3, 4])
        self.assertEqual(
            await self.pending("g"),
            [PendingEntry(1, "c3", 2), PendingEntry(2, "c2", 1), PendingEntry(3, "c3", 2), PendingEntry(4, "c3", 1)],
        )

    async def test_releasedEntriesLimitedByCount(self) -> None:
        """
        Redelivery respects count: released entries not handed out wait for the next read.
        """
        await self.append("a", "b", "c")
        await self.read("g", "c1")
        await self.store.release("g", "c1")
        self.assertEqual(await self.read("g", "c2", 2), [1, 2])
        self.assertEqual(await self.read("g", "c3", 2), [3])

    async def test_releaseTwiceCountsOnce(self) -> None:
        """
        Releasing a consumer again gives back nothing more.
        """
        await self.append("a")
        await self.read("g", "c1")
        self.assertEqual(await self.store.release("g", "c1"), 1)
        self.assertEqual(await self.store.release("g", "c1"), 0)
        self.assertEqual(await self.read("g", "c2"), [1])

    async def test_releaseUnknownGroup(self) -> None:
        """
        Releasing in a group that does not exist gives back nothing.
        """
        self.assertEqual(await self.store.release("nobody", "c1"), 0)

    async def test_releasedEntriesAreKept(self) -> None:
        """
        Entries released and not yet redelivered are not trimmed.
        """
        await self.append("a", "b")
        await self.read("g", "c1")
        await self.store.release("g", "c1")
        await self.store.ack("g", [])
        self.assertEqual(self.store.retained, 2)

    async def test_trimOnlyWhenEveryGroupAcked(self) -> None:
        """
        An entry is dropped only once every group has acknowledged it.
        """
        await self.append("a", "b", "c")
        await self.read("g1", "c1")
        await self.read("g2", "c1")
        await self.store.ack("g1", [1, 2, 3])
        self.assertEqual(self.store.retained, 3)
        await self.store.ack("g2", [1])
        self.assertEqual(self.store.retained, 2)
        await self.store.ack("g2", [2, 3])
        self.assertEqual(self.store.retained, 0)

    async def test_trimStopsAtOldestPending(self) -> None:
        """
        Acking a later entry does not drop an earlier one still pending.
        """
        await self.append("a", "b", "c")
        await self.read("g", "c1")
        await self.store.ack("g", [2, 3])
        self.assertEqual(self.store.retained, 3)
        self.assertEqual(await self.pending("g"), [PendingEntry(1, "c1", 1)])
        await self.store.ack("g", [1])
        self.assertEqual(self.store.retained, 0)

    async def test_trimKeepsEntriesAGroupHasNotRead(self) -> None:
        """
        Entries a group has not read yet are kept even when another group acked them.
        """
        await self.append("a", "b")
        await self.read("g2", "c1", 0)  # g2 exists, has read nothing
        await self.read("g1", "c1")
        await self.store.ack("g1", [1, 2])
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(await self.read("g2", "c1"), [1, 2])

    async def test_noGroupNothingTrimmed(self) -> None:
        """
        With no group, entries are kept for the first group that comes.
        """
        await self.append("a", "b")
        await self.store.ack("g", [1, 2])
        self.assertEqual(self.store.retained, 2)
        self.assertEqual(await self.read("g", "c1"), [1, 2])

    async def test_offsetsContinueAfterTrim(self) -> None:
        """
        Trimming does not reuse offsets, and later entries are still readable.
        """
        await self.append("a", "b")
        await self.read("g", "c1")
        await self.store.ack("g", [1, 2])
        self.assertEqual(await self.append("c"), [3])
        self.assertEqual(await self.store.readGroup("g", "c1", 5), [Entry(3, "c", "c-c")])

    async def test_close(self) -> None:
        """
        close fires with None.
        """
        self.assertIsNone(await self.store.close())


class MemoryStoreTests(StoreConformanceMixin, TestCase):
    """
    L{MemoryStore} conforms.
    """

    def makeStore(self, historyKeep: int = 0) -> MemoryStore:
        return MemoryStore(now=self.clock.seconds, historyKeep=historyKeep)


class SQLiteStoreTests(StoreConformanceMixin, TestCase):
    """
    L{SQLiteStore} conforms (driven inline, without its writer thread).
    """

    def makeStore(self, historyKeep: int = 0) -> SQLiteStore:
        self.path = self.mktemp() + ".sqlite3"
        store = SQLiteStore(self.path, runInline=True, now=self.clock.seconds, historyKeep=historyKeep)
        self.addCleanup(store.close)
        return store


class RedisStoreTests(StoreConformanceMixin, TestCase):
    """
    L{RedisStore} conforms, against a real redis-server (one for the module,
    emptied before each test).
    """

    timeout = 20

    async def makeStore(self, historyKeep: int = 0) -> RedisStore:
        server = sharedServer()
        server.command("FLUSHALL")
        store = RedisStore(parseRedisURL(server.url), now=self.clock.seconds, historyKeep=historyKeep)
        self.addCleanup(store.close)
        return await store.open()


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

    async def test_sideFileWrittenWhenIdle(self) -> None:
        """
        A committed offset that the side file skipped (written at most once per
        interval) is written once the writer thread has been idle that long.
        """
        from twisted.internet import reactor

        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        store = SQLiteStore(path, callFromThread=reactor.callFromThread, recordInterval=0.2)
        self.addCleanup(store.close)
        await store.append([("t", "a")])
        await store.append([("t", "b")])

        def recorded() -> str:
            with open(path + COMMITTED_SUFFIX) as f:
                return f.read().split()[1]

        await waitFor(lambda: int(recorded()) == 2, 5, what="offset 2 in the side file")

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

    async def test_closeWaitsForTheWriterThread(self) -> None:
        """
        close() fires only once the writer thread has checkpointed the write-ahead
        log and closed the connection: the main file alone then holds every entry.
        """
        started = threading.Event()
        release = threading.Event()
        original = sqliteModule._Database.close

        def slowClose(database):
            started.set()
            release.wait(10)
            return original(database)

        self.patch(sqliteModule._Database, "close", slowClose)
        store = self.open()
        await gatherResults([store.append([("t", f"m{i}")]) for i in range(100)])
        closed = store.close()
        self.assertTrue(await deferToThread(started.wait, 10))
        self.assertFalse(closed.called, "close() fired before the connection was closed")
        release.set()
        await closed
        self.assertFalse(os.path.exists(store.path + "-wal") and os.path.getsize(store.path + "-wal"))
        if os.path.exists(store.path + "-wal"):
            os.remove(store.path + "-wal")
        self.assertEqual(rowCount(store.path), 100)
        self.assertTrue((await store.close()) is None)

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


class SQLiteFullDiskTests(SynchronousTestCase):
    """
    SQLite on a full disk (SQLITE_FULL, also SQLITE_IOERR) may roll the whole
    transaction back by itself; every figure the store keeps in memory must still
    equal what the file holds, and the store must work again once there is room.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite3"
        self.store = SQLiteStore(self.path, runInline=True)
        self.addCleanup(self.store.close)
        self.disk = FullDisk(self.store._database.db)
        self.store._database.db = self.disk

    def test_failedInsertFailsTheWholeBatch(self) -> None:
        """
        An append that hits the full disk after another append of the same batch:
        there is no savepoint left to roll back to, so both fail, and the store
        counts neither; once there is room, appends get the next offsets.
        """
        self.successResultOf(self.store.append([("t", "before")]))
        self.successResultOf(self.store.append([("t", "a"), ("t", "b")]))
        full = [_Operation("append", ([("t", "c")], None, None)), _Operation("append", ([("t", "d")], None, None))]
        original = self.store._database.append

        def appendThenFill(*args):
            result = original(*args)
            self.disk.failing = "INSERT INTO ENTRIES"
            return result

        self.store._database.append = appendThenFill
        runBatch(self.store._database, full)
        self.store._database.append = original
        self.assertEqual([operation.failure is not None for operation in full], [True, True])
        self.assertIn("disk is full", full[1].failure.getErrorMessage())
        self.assertIn("disk is full", full[0].failure.getErrorMessage())
        self.assertEqual((self.store._database.retained, rowCount(self.path)), (3, 3))
        self.disk.failing = None
        self.assertEqual(self.successResultOf(self.store.append([("t", "e")])), [4])
        self.assertEqual(self.store.retained, 4)
        self.assertEqual(self.read(), ["before", "a", "b", "e"])

    def read(self) -> list[str]:
        return [entry.content for entry in self.successResultOf(self.store.readGroup("g", "c", 100))]

    def test_repeatedFailuresThenRoom(self) -> None:
        """
        Appends refused by a full disk again and again never make the store look
        fuller than it is ("msgqueue is full" for ever): C{retained} stays equal to
        the rows in the file, and appends succeed once there is room.
        """
        self.disk.failing = "INSERT INTO ENTRIES"
        for _ in range(20):
            failure = self.failureResultOf(self.store.append([("t", "x")] * 10), sqlite3.OperationalError)
            self.assertIn("disk is full", failure.getErrorMessage())
            self.assertEqual(self.store.retained, rowCount(self.path))
        self.assertEqual(self.store.retained, 0)
        self.disk.failing = None
        self.assertEqual(self.successResultOf(self.store.append([("t", "y")])), [1])
        self.assertEqual((self.store.retained, rowCount(self.path)), (1, 1))

    def test_failedCommit(self) -> None:
        """
        A commit that fails (the write-ahead log cannot grow) fails every operation
        of the batch and leaves the figures as the file has them.
        """
        self.successResultOf(self.store.append([("t", "a")]))
        self.disk.failing = "COMMIT"
        self.failureResultOf(self.store.append([("t", "b"), ("t", "c")]), sqlite3.OperationalError)
        self.failureResultOf(self.store.readGroup("g", "c", 10), sqlite3.OperationalError)
        self.assertEqual((self.store.retained, rowCount(self.path)), (1, 1))
        self.disk.failing = None
        self.assertEqual(self.successResultOf(self.store.append([("t", "d")])), [2])
        self.assertEqual(self.read(), ["a", "d"])

    def test_figuresReadAgainAfterAFailedOperation(self) -> None:
        """
        An operation that fails alone under its savepoint after changing a figure in
        memory leaves it as the database has it (read again), not as it changed it.
        """
        self.successResultOf(self.store.append([("t", "a"), ("t", "b")]))
        database = self.store._database
        original = database.readGroup

        def readThenFail(*args):
            original(*args)
            database.next += 5
            raise RuntimeError("bug")

        database.readGroup = readThenFail
        self.failureResultOf(self.store.readGroup("g", "c", 1), RuntimeError)
        self.assertEqual((database.first, database.next, database.retained), (1, 3, 2))

    def test_reloadFailsToo(self) -> None:
        """
        If the figures cannot be read again after a failure (the disk still fails),
        they are read before the next transaction instead.
        """
        self.successResultOf(self.store.append([("t", "a")]))
        database = self.store._database
        self.disk.failing = "INSERT INTO ENTRIES"
        original = database.reload
        database.reload = lambda: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error"))
        self.failureResultOf(self.store.append([("t", "b")]), sqlite3.OperationalError)
        self.assertTrue(database.needsReload)
        database.reload = original
        database.next += 10  # what a failed reload could leave behind
        self.disk.failing = None
        self.assertEqual(self.successResultOf(self.store.append([("t", "c")])), [2])
        self.assertFalse(database.needsReload)


class SQLiteIntegrityTests(SynchronousTestCase):
    """
    Every entry carries a checksum, verified whenever it is read: an altered entry
    is never served, but logged, counted and recorded in the dead letters.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite3"
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def open(self) -> SQLiteStore:
        store = SQLiteStore(self.path, runInline=True)
        self.addCleanup(store.close)
        return store

    def alter(self, sql: str, *args) -> None:
        """
        Change the file behind the store's back (a flipped bit, a bad copy).
        """
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(sql, args)
        finally:
            db.close()

    def read(self, store: SQLiteStore, group: str, consumer: str = "c", count: int = 100) -> list[tuple[int, str]]:
        return [(e.offset, e.content) for e in self.successResultOf(store.readGroup(group, consumer, count))]

    def test_alteredContentNotServed(self) -> None:
        """
        An entry whose content changed in the file is skipped by every group (an
        error names its offset), counted, and recorded as a damaged dead letter
        with deliveries 0 for each group that needed it; its neighbours are served.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "one"), ("t", "two"), ("t", "six")]))
        self.successResultOf(store.readGroup("late", "x", 0))
        self.alter("UPDATE entries SET content = 'twO' WHERE offset = 2")
        self.assertEqual(self.read(store, "g"), [(1, "one"), (3, "six")])
        self.assertEqual(store.damagedEntries, 1)
        [error] = [e for e in self.events if e["log_level"] == LogLevel.error]
        self.assertEqual(error["damaged"], [2])
        self.assertIn("offsets 2", error["log_format"].format(**error))
        self.assertEqual(self.read(store, "late"), [(1, "one"), (3, "six")])
        letters = self.successResultOf(store.deadLetters())
        self.assertEqual(
            sorted((d.group, d.offset, d.content, d.deliveries, d.damaged) for d in letters),
            [("g", 2, "twO", 0, True), ("late", 2, "twO", 0, True)],
        )
        self.assertEqual(store.damagedEntries, 1)
        self.successResultOf(store.ack("g", [1, 3]))
        self.successResultOf(store.ack("late", [1, 3]))
        self.assertEqual((store.retained, rowCount(self.path)), (0, 0))

    def test_alteredTopicOrUndecodable(self) -> None:
        """
        A changed topic fails the checksum too, and bytes that are not UTF-8 any more
        are damaged even without a checksum (an entry written before checksums).
        """
        store = self.open()
        self.successResultOf(store.append([("t", "a"), ("t", "b"), ("t", "c")]))
        self.alter("UPDATE entries SET topic = 'u' WHERE offset = 1")
        self.alter("UPDATE entries SET content = CAST(X'63ff' AS TEXT), crc = NULL WHERE offset = 3")
        self.assertEqual(self.read(store, "g"), [(2, "b")])
        self.assertEqual(store.damagedEntries, 2)
        letters = self.successResultOf(store.deadLetters("g"))
        self.assertEqual([(d.offset, d.topic, d.content, d.damaged) for d in letters],
                         [(1, "u", "a", True), (3, "t", "c\ufffd", True)])

    def test_alteredWhilePending(self) -> None:
        """
        An entry altered after it was delivered is checked again when it is handed
        out again: the given-back copy is skipped, and dropped from every group
        that had it pending, so nothing waits for it.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "a"), ("t", "b")]))
        self.read(store, "g", "c1")
        self.read(store, "h", "c1")
        self.successResultOf(store.release("g", "c1"))
        self.alter("UPDATE entries SET content = 'B' WHERE offset = 2")
        self.assertEqual(self.read(store, "g", "c2"), [(1, "a")])
        self.assertEqual([p.offset for p in self.successResultOf(store.pending("h"))], [1])
        self.assertEqual(sorted(d.group for d in self.successResultOf(store.deadLetters())), ["g", "h"])

    def test_alteredWhenIsolated(self) -> None:
        """
        A given-back entry that must go alone and turns out damaged is dropped, and
        the read goes on with what follows.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "a"), ("t", "b")]))
        for _ in range(2):
            self.successResultOf(store.readGroup("g", "c1", 1))
            self.successResultOf(store.release("g", "c1"))
        self.alter("UPDATE entries SET content = 'A' WHERE offset = 1")
        self.assertEqual(self.read(store, "g", "c2"), [(2, "b")])

    def test_damagedDeadLetter(self) -> None:
        """
        A dead letter keeps its entry's checksum: one altered later is marked damaged.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "poison")]))
        for _ in range(3):
            self.successResultOf(store.readGroup("g", "c1", 1, maxDeliver=1))
            self.successResultOf(store.release("g", "c1"))
        self.successResultOf(store.readGroup("g", "c1", 1, maxDeliver=1))
        [letter] = self.successResultOf(store.deadLetters())
        self.assertEqual((letter.content, letter.deliveries, letter.damaged), ("poison", 3, False))
        self.alter("UPDATE dead_letters SET content = 'poisoN'")
        [letter] = self.successResultOf(store.deadLetters())
        self.assertEqual((letter.content, letter.damaged), ("poisoN", True))

    def test_schema1Migrated(self) -> None:
        """
        A store written before checksums opens: its entries (not verified) are
        served, new ones get checksums, and the file says schema 2.
        """
        db = sqlite3.connect(self.path, isolation_level=None)
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO entries (topic, content, stored) VALUES ('t', 'old', 0)")
        db.execute("INSERT INTO dead_letters VALUES ('g', 9, 't', 'dead', 5, 0)")
        db.close()
        store = self.open()
        self.assertEqual(store.epoch, "old-epoch")
        self.successResultOf(store.append([("t", "new")]))
        self.assertEqual(self.read(store, "g"), [(1, "old"), (2, "new")])
        self.assertEqual([(d.content, d.damaged) for d in self.successResultOf(store.deadLetters())], [("dead", False)])
        self.successResultOf(store.close())
        db = sqlite3.connect(self.path)
        self.assertEqual(db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone(), ("2",))
        self.assertEqual([crc is None for (crc,) in db.execute("SELECT crc FROM entries ORDER BY offset")], [True, False])
        db.close()

    def test_schema1DeadLettersReadOnly(self) -> None:
        """
        wsqueue-deadletters reads a store not yet migrated (read-only) too.
        """
        db = sqlite3.connect(self.path, isolation_level=None)
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO dead_letters VALUES ('g', 9, 't', 'dead', 5, 0)")
        self.assertEqual([d.content for d in sqliteModule.readDeadLetters(db)], ["dead"])
        db.close()

    def test_newerSchemaRefused(self) -> None:
        """
        A store written by a newer wsqueue is refused with one line, not misread.
        """
        store = self.open()
        self.successResultOf(store.close())
        self.alter("UPDATE meta SET value = '3' WHERE key = 'schema'")
        with self.assertRaises(StoreError) as raised:
            SQLiteStore(self.path, runInline=True)
        self.assertIn("newer wsqueue", str(raised.exception))


class SQLiteCommittedOffsetTests(SynchronousTestCase):
    """
    The side file PATH.committed remembers the highest committed offset and the
    epoch, so that a store whose write-ahead log was lost or cut short is refused
    at open instead of silently serving part of what was acknowledged.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp()) + ".sqlite3"
        self.side = self.path + COMMITTED_SUFFIX

    def open(self, path: str | None = None, recordInterval: float = 0) -> SQLiteStore:
        # recordInterval 0: written after every appending commit, as a crash copy
        # taken at any moment would find it.
        store = SQLiteStore(path or self.path, runInline=True, recordInterval=recordInterval)
        self.addCleanup(store.close)
        return store

    def test_writtenAtMostOncePerInterval(self) -> None:
        """
        While appends keep coming, the side file is written at most once per
        interval (a write per commit added to every message's latency), and on close.
        """
        store = self.open(recordInterval=3600)
        self.successResultOf(store.append([("t", "a")]))
        self.assertEqual(self.sideFile(), (store.epoch, 0))
        self.successResultOf(store.close())
        self.assertEqual(self.sideFile(), (store.epoch, 1))

    def sideFile(self, path: str | None = None) -> tuple[str, int]:
        with open((path or self.path) + COMMITTED_SUFFIX) as f:
            epoch, offset = f.read().split()
        return epoch, int(offset)

    def refusal(self, path: str | None = None) -> str:
        with self.assertRaises(StoreError) as raised:
            SQLiteStore(path or self.path, runInline=True)
        message = str(raised.exception)
        self.assertNotIn("\n", message)
        return message

    def test_written(self) -> None:
        """
        Created at open, and updated after each commit that stored messages.
        """
        store = self.open()
        self.assertEqual(self.sideFile(), (store.epoch, 0))
        self.successResultOf(store.append([("t", "a"), ("t", "b")]))
        self.assertEqual(self.sideFile(), (store.epoch, 2))
        self.successResultOf(store.readGroup("g", "c", 2))
        self.successResultOf(store.ack("g", [1, 2]))
        self.assertEqual(self.sideFile(), (store.epoch, 2))
        self.successResultOf(store.append([("t", "c")]))
        self.assertEqual(self.sideFile(), (store.epoch, 3))

    def crashedCopy(self, entries: int, walFraction: float) -> str:
        """
        Store C{entries} messages one commit at a time, copy the files as a crash
        (kill -9, power loss) leaves them, with the write-ahead log cut to
        C{walFraction} of its length; return the copy's path.
        """
        store = self.open()
        for number in range(entries):
            self.successResultOf(store.append([("t", f"message {number}")]))
        self.assertGreater(os.path.getsize(self.path + "-wal"), 0)
        copy = os.path.abspath(self.mktemp())
        os.makedirs(copy)
        target = os.path.join(copy, "store.sqlite3")
        for suffix in ("", "-wal", COMMITTED_SUFFIX):
            shutil.copyfile(self.path + suffix, target + suffix)
        with open(target + "-wal", "r+b") as f:
            f.truncate(int(os.path.getsize(target + "-wal") * walFraction))
        return target

    def test_cutWriteAheadLogRefused(self) -> None:
        """
        A write-ahead log cut short opens in SQLite with only the transactions
        before the cut; the store refuses it with one line naming the side file,
        what is missing and how to accept the loss.  Deleting the side file does.
        """
        copy = self.crashedCopy(200, 0.3)
        message = self.refusal(copy)
        self.assertIn("offsets up to 200 were committed", message)
        self.assertIn(f"{copy}-wal", message)
        self.assertIn(f"delete {copy}{COMMITTED_SUFFIX}", message)
        os.remove(copy + COMMITTED_SUFFIX)
        store = self.open(copy)
        self.assertLess(store.retained, 200)
        self.assertEqual(self.sideFile(copy)[1], store.retained)

    def test_wholeWriteAheadLogLost(self) -> None:
        """
        With no write-ahead log at all, the main file (never checkpointed) holds
        nothing: refused too, rather than started under a new epoch.
        """
        copy = self.crashedCopy(10, 0.0)
        os.remove(copy + "-wal")
        message = self.refusal(copy)
        self.assertIn("up to 10 were committed", message)

    def test_intactCopyAccepted(self) -> None:
        """
        A crash that leaves the write-ahead log whole is no reason to refuse.
        """
        copy = self.crashedCopy(20, 1.0)
        self.assertEqual(self.open(copy).retained, 20)

    def test_otherEpochRefused(self) -> None:
        """
        A store file replaced by another store's (a restored backup of another
        node, a new file) is refused while the side file says another epoch.
        """
        store = self.open()
        self.successResultOf(store.append([("t", "a")]))
        self.successResultOf(store.close())
        with open(self.side, "w") as f:
            f.write(f"{'0' * 32} {1:020d}\n")
        message = self.refusal()
        self.assertIn(f"has epoch {store.epoch}", message)
        self.assertIn(f"under epoch {'0' * 32}", message)
        os.remove(self.path)
        self.assertIn("is empty or new", self.refusal())

    def test_emptyOrGarbledSideFile(self) -> None:
        """
        An empty side file (created just before a power loss) says nothing; a
        garbled one is refused, naming it.
        """
        open(self.side, "w").close()
        self.open()
        with open(self.side, "w") as f:
            f.write("what is this")
        self.assertIn(f"{self.side} (the highest committed offset", self.refusal())

    def test_cleanReopen(self) -> None:
        """
        Closing and opening again, many times, never trips the check.
        """
        for round in range(3):
            store = SQLiteStore(self.path, runInline=True)
            self.successResultOf(store.append([("t", str(round))]))
            self.successResultOf(store.close())
        self.assertEqual(self.sideFile()[1], 3)
