"""
Tests for L{wsqueue.store.memory.MemoryStore}, the in-memory L{IMessageStore}.

The broker relies on the store's consumer-group semantics (every group gets every
entry, consumers of one group share them, released entries come back first) and on
its trimming: an entry must stay until every group has acknowledged it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wsqueue.store import Entry, IMessageStore, MemoryStore, PendingEntry


class MemoryStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryStore}.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()

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

    def test_interface(self) -> None:
        """
        MemoryStore provides every method and attribute of IMessageStore.
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
