"""
Tests for L{wsqueue.broker.QueueBroker}: who gets which entry, acknowledgements, and
when pushers must wait.

The broker is driven with a L{Clock} (dispatch runs on C{callLater(0, ...)}), a real
L{MemoryStore} and fake consumers and pushers that record what they are told, so no
network is involved.
"""

from __future__ import annotations

from collections import Counter

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.broker import FULL_MESSAGE, READ_BATCH, RETRY_MAX, QueueBroker, Retention
from wsqueue.store.base import Entry
from wsqueue.store.memory import MemoryStore
from wsqueue.store.sqlite import SQLiteStore
from wsqueue.testing import RecordingSender


class FakeConsumer:
    """
    A C{/popmsg} connection that records every delivery.
    """

    def __init__(self, name: str, group: str = "g", explicitAck: bool = False, writable: bool = True) -> None:
        self.name = name
        self.group = group
        self.explicitAck = explicitAck
        self.writable = writable
        self.deliveries: list[tuple[list[Entry], str]] = []

    def deliver(self, entries: list[Entry], epoch: str) -> None:
        self.deliveries.append((list(entries), epoch))

    @property
    def offsets(self) -> list[int]:
        """
        Every offset delivered, in delivery order.
        """
        return [entry.offset for entries, _ in self.deliveries for entry in entries]


class SlowStore:
    """
    A store whose reads wait until the test lets them finish, to exercise what
    happens while the broker waits on a durable or networked store.
    """

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.epoch = store.epoch
        self.reads: list[Deferred] = []
        self.failReads = 0

    @property
    def retained(self) -> int:
        return self.store.retained

    @property
    def backlog(self) -> int:
        return self.store.backlog

    def append(self, messages, producer=None, seqs=None):
        return self.store.append(messages, producer, seqs)

    def readGroup(self, group, consumer, count, maxDeliver=None):
        if self.failReads:
            self.failReads -= 1
            return fail(RuntimeError("store is broken"))
        entries = self.successResultOf(self.store.readGroup(group, consumer, count, maxDeliver))
        d = Deferred()
        self.reads.append((d, entries))
        return d

    def finishRead(self) -> None:
        d, entries = self.reads.pop(0)
        d.callback(entries)

    def ack(self, group, offsets):
        return self.store.ack(group, offsets)

    def pending(self, group):
        return self.store.pending(group)

    def release(self, group, consumer):
        return self.store.release(group, consumer)

    def close(self):
        return succeed(None)

    @staticmethod
    def successResultOf(d: Deferred):
        results = []
        d.addBoth(results.append)
        return results[0]


def messages(*topics: str) -> list[tuple[str, str]]:
    return [(topic, f"c-{topic}") for topic in topics]


class BrokerTestCase(SynchronousTestCase):
    """
    A broker over a L{MemoryStore} and a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.broker = QueueBroker(self.store, self.clock, maxQueued=100, maxInFlight=10)

    def push(self, *topics: str, **kwargs) -> list[int]:
        """
        Push one message per topic and let the dispatch run; return their offsets.
        """
        offsets = self.successResultOf(self.broker.push(messages(*topics), **kwargs))
        self.clock.advance(0)
        return offsets

    def addConsumer(self, *args, **kwargs) -> FakeConsumer:
        consumer = FakeConsumer(*args, **kwargs)
        self.broker.addConsumer(consumer)
        self.clock.advance(0)
        return consumer

    def ack(self, consumer: FakeConsumer, upTo: int):
        """
        Acknowledge up to C{upTo} and let the resulting dispatch run; return how many
        entries were acknowledged (None when nothing was).
        """
        d = self.broker.ack(consumer, upTo)
        result = None if d is None else self.successResultOf(d)
        self.clock.advance(0)
        return result

    def pendingOffsets(self, group: str = "g") -> list[int]:
        return [entry.offset for entry in self.successResultOf(self.store.pending(group))]

    def tearDown(self) -> None:
        # Every dispatch the test started has run: nothing is left scheduled.
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DeliveryTests(BrokerTestCase):
    """
    Tests for handing pushed entries to consumers.
    """

    def test_pushDelivers(self) -> None:
        """
        A pushed message reaches a consumer, with the store's epoch, without waiting
        for another reactor turn: the read goes to the store right behind the append.
        """
        consumer = self.addConsumer("c1")
        d = self.broker.push(messages("a"))
        self.assertEqual(self.successResultOf(d), [1])
        self.assertEqual(consumer.deliveries, [([Entry(1, "a", "c-a")], self.store.epoch)])

    def test_consumerAddedLaterGetsQueued(self) -> None:
        """
        Messages pushed before any consumer came are delivered to the first one.
        """
        self.push("a", "b")
        consumer = self.addConsumer("c1")
        self.assertEqual(consumer.offsets, [1, 2])

    def test_roundRobinInOneGroup(self) -> None:
        """
        Consumers of one group share the entries turn by turn; none gets an entry twice.
        """
        self.broker.maxInFlight = 1
        first = self.addConsumer("c1", explicitAck=True)
        second = self.addConsumer("c2", explicitAck=True)
        self.push("a", "b", "c", "d")
        self.assertEqual((first.offsets, second.offsets), ([1], [2]))
        self.ack(first, 1)
        self.assertEqual((first.offsets, second.offsets), ([1, 3], [2]))
        self.ack(second, 2)
        self.assertEqual((first.offsets, second.offsets), ([1, 3], [2, 4]))

    def test_roundRobinAcrossDispatches(self) -> None:
        """
        Consumers of one group take turns across dispatches, starting after the one served last.
        """
        first = self.addConsumer("c1")
        second = self.addConsumer("c2")
        third = self.addConsumer("c3")
        for topic in "abcd":
            self.push(topic)
        self.assertEqual((first.offsets, second.offsets, third.offsets), ([1, 4], [2], [3]))

    def test_sharingWithinWindow(self) -> None:
        """
        Each consumer of a group gets one window-sized batch per round.
        """
        self.broker.maxInFlight = 2
        first = self.addConsumer("c1", explicitAck=True)
        second = self.addConsumer("c2", explicitAck=True)
        self.push("a", "b", "c", "d", "e")
        self.assertEqual((first.offsets, second.offsets), ([1, 2], [3, 4]))

    def test_everyGroupGetsEverything(self) -> None:
        """
        Each consumer group receives every entry.
        """
        first = self.addConsumer("c1", group="g1")
        second = self.addConsumer("c1", group="g2")
        self.push("a", "b", "c")
        self.assertEqual(first.offsets, [1, 2, 3])
        self.assertEqual(second.offsets, [1, 2, 3])

    def test_batchSize(self) -> None:
        """
        An ack=none consumer gets at most READ_BATCH entries per delivery, and all of them in the end.
        """
        consumer = self.addConsumer("c1")
        self.push(*[str(i) for i in range(READ_BATCH + 5)])
        self.assertEqual([len(entries) for entries, _ in consumer.deliveries], [READ_BATCH, 5])
        self.assertEqual(consumer.offsets, list(range(1, READ_BATCH + 6)))

    def test_ackNoneAckedOnDelivery(self) -> None:
        """
        Entries delivered to an ack=none consumer are acked at once, so the store can drop them.
        """
        consumer = self.addConsumer("c1")
        self.push("a", "b")
        self.assertEqual(consumer.offsets, [1, 2])
        self.assertEqual(self.pendingOffsets(), [])
        self.assertEqual(self.store.retained, 0)

    def test_notWritableGetsNothing(self) -> None:
        """
        A consumer whose connection cannot take data gets nothing until consumerWritable().
        """
        consumer = self.addConsumer("c1", writable=False)
        self.push("a")
        self.assertEqual(consumer.deliveries, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        consumer.writable = True
        self.clock.advance(0)
        self.assertEqual(consumer.deliveries, [])
        self.broker.consumerWritable()
        self.clock.advance(0)
        self.assertEqual(consumer.offsets, [1])

    def test_notWritableLeavesEntriesForOthers(self) -> None:
        """
        Entries skip a consumer that cannot take data and go to one of its group that can.
        """
        blocked = self.addConsumer("c1", writable=False)
        other = self.addConsumer("c2")
        self.push("a")
        self.assertEqual((blocked.offsets, other.offsets), ([], [1]))


class ExplicitAckTests(BrokerTestCase):
    """
    Tests for ack=explicit consumers: the window and cumulative acknowledgements.
    """

    def test_window(self) -> None:
        """
        An explicit-ack consumer holds at most maxInFlight unacked entries, and more after acking.
        """
        self.broker.maxInFlight = 3
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push("a", "b", "c", "d", "e")
        self.assertEqual(consumer.offsets, [1, 2, 3])
        self.assertEqual(self.pendingOffsets(), [1, 2, 3])
        self.assertEqual(self.ack(consumer, 1), 1)
        self.assertEqual(consumer.offsets, [1, 2, 3, 4])
        self.assertEqual(self.ack(consumer, 4), 3)
        self.assertEqual(consumer.offsets, [1, 2, 3, 4, 5])

    def test_storeReadsOnlyWhenSomethingWaits(self) -> None:
        """
        The broker asks the store for entries only when some may be there: not again
        after a short read, and not after an ack unless the window was full.
        """
        reads = []
        readGroup = self.store.readGroup
        self.store.readGroup = lambda *args: reads.append(args[2]) or readGroup(*args)
        self.broker.maxInFlight = 3
        consumer = self.addConsumer("c1", explicitAck=True)
        reads.clear()
        self.push("a", "b")
        self.assertEqual((consumer.offsets, reads), ([1, 2], [3]))
        self.ack(consumer, 2)
        self.assertEqual(reads, [3])
        self.push("c", "d", "e", "f")
        self.assertEqual((consumer.offsets, reads), ([1, 2, 3, 4, 5], [3, 3]))
        self.ack(consumer, 3)
        self.assertEqual((consumer.offsets, reads), ([1, 2, 3, 4, 5, 6], [3, 3, 1]))

    def test_ackIsCumulative(self) -> None:
        """
        Acknowledging offset N acknowledges N and every entry delivered before it.
        """
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push("a", "b", "c", "d")
        self.assertEqual(self.ack(consumer, 3), 3)
        self.assertEqual(self.pendingOffsets(), [4])
        self.assertEqual(self.store.retained, 1)

    def test_ackUnknownOffset(self) -> None:
        """
        An offset never delivered to the consumer (or already acknowledged) acks nothing.
        """
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push("a", "b")
        self.assertIsNone(self.ack(consumer, 99))
        self.assertEqual(self.pendingOffsets(), [1, 2])
        self.assertEqual(self.ack(consumer, 1), 1)
        self.assertIsNone(self.ack(consumer, 1))
        self.assertEqual(self.pendingOffsets(), [2])

    def test_ackOtherConsumersOffset(self) -> None:
        """
        A consumer cannot acknowledge an entry delivered to another consumer.
        """
        self.broker.maxInFlight = 1
        first = self.addConsumer("c1", explicitAck=True)
        second = self.addConsumer("c2", explicitAck=True)
        self.push("a", "b")
        self.assertEqual((first.offsets, second.offsets), ([1], [2]))
        self.assertIsNone(self.ack(first, 2))
        self.assertEqual(self.pendingOffsets(), [1, 2])

    def test_ackUnknownConsumer(self) -> None:
        """
        An ack from a consumer the broker does not know does nothing.
        """
        self.push("a")
        self.assertIsNone(self.broker.ack(FakeConsumer("ghost"), 1))

    def test_ackFollowsDeliveryOrder(self) -> None:
        """
        Acking a redelivered entry also acks the higher offsets delivered to that consumer before it.
        """
        self.broker.maxInFlight = 2
        leaving = self.addConsumer("c1", explicitAck=True)
        self.push("a", "b")
        self.assertEqual(leaving.offsets, [1, 2])
        staying = self.addConsumer("c2", explicitAck=True)
        self.push("c", "d")
        self.assertEqual(staying.offsets, [3, 4])
        self.broker.maxInFlight = 4
        self.successResultOf(self.broker.removeConsumer(leaving))
        self.clock.advance(0)
        self.assertEqual(staying.offsets, [3, 4, 1, 2])
        self.assertEqual(self.ack(staying, 1), 3)
        self.assertEqual(self.pendingOffsets(), [2])


class LeavingConsumerTests(BrokerTestCase):
    """
    Tests for consumers that go away.
    """

    def test_unackedGoToNextConsumer(self) -> None:
        """
        A consumer that leaves gives its unacked entries to the next consumer of its group.
        """
        leaving = self.addConsumer("c1", explicitAck=True)
        self.push("a", "b", "c")
        self.ack(leaving, 1)
        other = self.addConsumer("c2", explicitAck=True)
        self.assertEqual(other.offsets, [])
        self.assertEqual(self.successResultOf(self.broker.removeConsumer(leaving)), 2)
        self.clock.advance(0)
        self.assertEqual(other.offsets, [2, 3])
        pending = self.successResultOf(self.store.pending("g"))
        self.assertEqual([(p.offset, p.consumer, p.deliveries) for p in pending], [(2, "c2", 2), (3, "c2", 2)])

    def test_unackedWaitForAConsumer(self) -> None:
        """
        Entries given back when the last consumer leaves go to the group's next consumer.
        """
        leaving = self.addConsumer("c1", explicitAck=True)
        self.push("a")
        self.successResultOf(self.broker.removeConsumer(leaving))
        self.clock.advance(0)
        self.assertEqual(leaving.offsets, [1])
        later = self.addConsumer("c2", explicitAck=True)
        self.assertEqual(later.offsets, [1])

    def test_leftConsumerGetsNothing(self) -> None:
        """
        A consumer that has left receives nothing more.
        """
        consumer = self.addConsumer("c1")
        self.successResultOf(self.broker.removeConsumer(consumer))
        self.push("a")
        self.assertEqual(consumer.deliveries, [])
        self.assertEqual(self.store.retained, 1)

    def test_removeUnknownConsumer(self) -> None:
        """
        Removing a consumer twice, or one never added, does nothing.
        """
        consumer = self.addConsumer("c1")
        self.assertIsNotNone(self.broker.removeConsumer(consumer))
        self.assertIsNone(self.broker.removeConsumer(consumer))
        self.assertIsNone(self.broker.removeConsumer(FakeConsumer("ghost")))

    def test_removeWithNothingPending(self) -> None:
        """
        Removing a consumer with nothing unacknowledged schedules no dispatch.
        """
        consumer = self.addConsumer("c1")
        self.assertEqual(self.successResultOf(self.broker.removeConsumer(consumer)), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FlowControlTests(BrokerTestCase):
    """
    Tests for pausing pushers while the queue is full.
    """

    def setUp(self) -> None:
        super().setUp()
        self.broker.maxQueued = 3
        self.pusher = RecordingSender()
        self.broker.addPusher(self.pusher)

    def tearDown(self) -> None:
        # A pause still on ends by its time limit.
        self.clock.advance(self.broker.flow.pauseLimit)
        super().tearDown()

    def test_pausedWhenFull(self) -> None:
        """
        Pushers are paused once the store holds maxQueued entries, and only once.
        """
        self.push("a", "b")
        self.assertEqual(self.pusher.calls, [])
        self.assertFalse(self.broker.full)
        self.push("c")
        self.assertTrue(self.broker.full)
        self.assertEqual(self.pusher.calls, ["pause"])
        self.push("d")
        self.assertEqual(self.pusher.calls, ["pause"])

    def test_resumedWhenAcksMakeRoom(self) -> None:
        """
        Paused pushers resume once acknowledgements let the store drop entries.
        """
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push("a", "b", "c")
        self.assertEqual(self.pusher.calls, ["pause"])
        self.ack(consumer, 1)
        self.assertEqual(self.pusher.calls, ["pause", "resume"])
        self.assertFalse(self.broker.full)

    def test_resumedWhenAckNoneConsumerTakesAll(self) -> None:
        """
        An ack=none consumer arriving at a full queue drains it and resumes pushers.
        """
        self.push("a", "b", "c")
        self.assertEqual(self.pusher.calls, ["pause"])
        self.addConsumer("c1")
        self.assertEqual(self.pusher.calls, ["pause", "resume"])

    def test_notResumedWhileAnotherGroupLags(self) -> None:
        """
        Acks of one group do not resume pushers while another group still holds the entries.
        """
        fast = self.addConsumer("c1", group="g1", explicitAck=True)
        self.addConsumer("c1", group="g2", explicitAck=True)
        self.push("a", "b", "c")
        self.ack(fast, 3)
        self.assertEqual(self.pusher.calls, ["pause"])

    def test_pusherAddedWhileFull(self) -> None:
        """
        A pusher that connects while the queue is full is paused at once.
        """
        self.push("a", "b", "c")
        late = RecordingSender()
        self.broker.addPusher(late)
        self.assertEqual(late.calls, ["pause"])

    def test_removedPusherNotResumed(self) -> None:
        """
        A pusher that has gone is neither paused nor resumed.
        """
        self.broker.removePusher(self.pusher)
        self.broker.removePusher(self.pusher)
        self.push("a", "b", "c")
        self.assertEqual(self.pusher.calls, [])

    def test_resumedOnlyWithRoom(self) -> None:
        """
        A queue kept at its bound does not resume (and log) after every ack: pushers
        resume once 10 % (at least one entry) is free.
        """
        self.broker.maxQueued = 20
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push(*["t"] * 20)
        self.ack(consumer, 1)
        self.assertEqual(self.pusher.calls, ["pause"])
        self.ack(consumer, 2)
        self.assertEqual(self.pusher.calls, ["pause", "resume"])

    def test_pauseIsLogged(self) -> None:
        """
        Pausing pushers is logged as a warning naming how many are held.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.push("a", "b", "c")
        warnings = [e for e in events if e["log_level"] == LogLevel.warn and "queue full" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["retained"], warnings[0]["pushers"]), (3, 1))


class DuplicateTests(BrokerTestCase):
    """
    The broker passes a producer's sequence numbers to the store, which skips resends.
    """

    def test_resendSkipped(self) -> None:
        """
        A resend of numbers already stored fires None offsets and stores nothing.
        """
        self.assertEqual(self.push("a", "b", producer="p1", seqs=[1, 2]), [1, 2])
        self.assertEqual(self.push("a", "b", "c", producer="p1", seqs=[1, 2, 3]), [None, None, 3])
        self.assertEqual(self.store.retained, 3)


class SlowStoreTests(SynchronousTestCase):
    """
    Tests for a store whose reads take time (a durable or networked store).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = SlowStore(MemoryStore())
        self.broker = QueueBroker(self.store, self.clock)

    def settle(self) -> None:
        """
        Let every store read and every dispatch finish.
        """
        self.clock.advance(0)
        while self.store.reads:
            self.store.finishRead()
            self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_consumerLeavesDuringRead(self) -> None:
        """
        Entries read for a consumer that left during the store read go to the group's next consumer.
        """
        leaving = FakeConsumer("c1", explicitAck=True)
        self.broker.addConsumer(leaving)
        self.broker.push(messages("a", "b"))
        self.clock.advance(0)
        self.assertEqual(len(self.store.reads), 1)
        self.broker.removeConsumer(leaving)
        self.settle()
        self.assertEqual(leaving.deliveries, [])
        other = FakeConsumer("c2", explicitAck=True)
        self.broker.addConsumer(other)
        self.settle()
        self.assertEqual(other.offsets, [1, 2])

    def test_dispatchWaitsForRunningOne(self) -> None:
        """
        A dispatch requested while one waits on the store runs after it, without spinning the clock.
        """
        consumer = FakeConsumer("c1")
        self.broker.addConsumer(consumer)
        self.broker.push(messages("a"))
        # The push itself sent the read, behind its append, and nothing is scheduled.
        self.assertEqual((len(self.store.reads), self.clock.getDelayedCalls()), (1, []))
        self.clock.advance(0)
        self.assertEqual(len(self.store.reads), 1)
        self.broker.push(messages("b"))
        self.clock.advance(0)
        self.assertEqual(len(self.store.reads), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.store.finishRead()
        self.assertEqual(consumer.offsets, [1])
        self.settle()
        self.assertEqual(consumer.offsets, [1, 2])

    def test_requestedDispatchRunsAfterRunningOne(self) -> None:
        """
        A consumer made writable while a dispatch waits on the store is served after that dispatch.
        """
        first = FakeConsumer("c1", group="g1", explicitAck=True)
        self.broker.addConsumer(first)
        self.broker.push(messages("a"))
        self.clock.advance(0)
        late = FakeConsumer("c1", group="g2", writable=False)
        self.broker.addConsumer(late)
        late.writable = True
        self.broker.consumerWritable()
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.settle()
        self.assertEqual(first.offsets, [1])
        self.assertEqual(late.offsets, [1])

    def test_failedReadRetried(self) -> None:
        """
        A delivery pass that fails (the store cannot read) is logged once and tried
        again by itself, backing off (0.1 s, 0.2 s...), until it works: the waiting
        consumer gets the stored entries without any new push.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.store.failReads = 2
        consumer = FakeConsumer("c1")
        self.broker.addConsumer(consumer)
        self.broker.push(messages("a", "b"))
        self.clock.advance(0)
        self.assertEqual((self.store.failReads, consumer.offsets), (1, []))
        self.clock.advance(0.1)
        self.assertEqual((self.store.failReads, consumer.offsets), (0, []))
        self.clock.advance(0.1)
        self.assertEqual(consumer.offsets, [])
        self.clock.advance(0.1)
        self.store.finishRead()
        self.assertEqual(consumer.offsets, [1, 2])
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["error"], "RuntimeError: store is broken")
        self.assertTrue([e for e in events if "works again after" in e["log_format"] and e["failures"] == 2])
        self.clock.advance(10)
        [summary] = [e for e in events if "repeated" in e["log_format"]]
        self.assertEqual(summary["repeats"], 1)
        self.settle()

    def test_retryBackoffBounded(self) -> None:
        """
        While the store keeps failing, retries back off to at most RETRY_MAX apart,
        new pushes do not hurry them, and the log holds one line per 10 s.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.store.failReads = 1000
        self.broker.addConsumer(FakeConsumer("c1"))
        self.clock.advance(0)
        attempts = []
        for _ in range(40):
            before = self.store.failReads
            self.broker.push(messages("x"))
            self.clock.advance(0.5)
            attempts.append(before - self.store.failReads)
        self.assertLessEqual(sum(attempts[-10:]), 10 * 0.5 / RETRY_MAX + 1)
        self.assertLessEqual(len([e for e in events if e["log_level"] == LogLevel.error]), 3)
        self.store.failReads = 0
        self.clock.advance(RETRY_MAX)
        self.settle()
        self.clock.advance(10)


class MaintenanceTests(SynchronousTestCase):
    """
    The broker's periodic maintenance: the ack wait, dead letters, retention limits,
    group expiry, and refusing pushes while stopping or far past the bound.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(now=self.clock.seconds)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def broker(self, **kwargs) -> QueueBroker:
        self.broker_ = QueueBroker(self.store, self.clock, maxQueued=100, maxInFlight=10, **kwargs)
        return self.broker_

    def maintain(self) -> None:
        self.successResultOf(ensureDeferred(self.broker_.maintain()))
        self.clock.advance(0)

    def test_ackWaitRedelivers(self) -> None:
        """
        An entry not acknowledged within the ack wait goes to another consumer of
        the group, and no longer counts against the first one's window.
        """
        broker = self.broker(ackWait=30)
        silent = FakeConsumer("silent", explicitAck=True)
        broker.addConsumer(silent)
        self.successResultOf(broker.push(messages("a")))
        self.clock.advance(0)
        self.assertEqual(silent.offsets, [1])
        silent.writable = False
        other = FakeConsumer("other", explicitAck=True)
        broker.addConsumer(other)
        self.clock.advance(29)
        self.maintain()
        self.assertEqual(other.offsets, [])
        self.clock.advance(2)
        self.maintain()
        self.assertEqual(other.offsets, [1])
        self.assertEqual(broker._byConsumer[silent].inFlight, [])
        self.assertTrue([e for e in self.events if "not acknowledged within" in e["log_format"]])

    def test_maxDeliverDeadLetters(self) -> None:
        """
        After --max-deliver deliveries alone (following two in a batch) an entry is
        dead-lettered, not delivered again.
        """
        broker = self.broker(maxDeliver=2)
        self.successResultOf(broker.push(messages("a")))
        for number in range(5):
            consumer = FakeConsumer(f"c{number}", explicitAck=True)
            broker.addConsumer(consumer)
            self.clock.advance(0)
            self.assertEqual(consumer.offsets, [1] if number < 4 else [])
            self.successResultOf(broker.removeConsumer(consumer))
            self.clock.advance(0)
        [letter] = self.successResultOf(self.store.deadLetters("g"))
        self.assertEqual((letter.offset, letter.deliveries), (1, 4))

    def test_retentionLogsPerGroup(self) -> None:
        """
        Retention limits drop the oldest entries and say which group lost how many.
        """
        self.broker(retention=Retention(maxMessages=2, groupExpiry=None))
        self.successResultOf(self.store.readGroup("absent", "gone", 0))
        self.successResultOf(self.broker_.push(messages("a", "b", "c", "d", "e")))
        self.maintain()
        self.assertEqual(self.store.retained, 2)
        [line] = [e for e in self.events if "retention limits dropped" in e["log_format"]]
        self.assertEqual((line["group"], line["count"]), ("absent", 3))

    def test_groupExpiry(self) -> None:
        """
        A group without consumers idle past the expiry is removed and logged; a group
        with a connected consumer is kept however idle.
        """
        self.broker(retention=Retention(groupExpiry=60))
        present = FakeConsumer("here", group="present")
        self.broker_.addConsumer(present)
        self.successResultOf(self.store.readGroup("absent", "gone", 0))
        self.clock.advance(61)
        self.maintain()
        [line] = [e for e in self.events if "removed: idle" in e["log_format"]]
        self.assertEqual(line["group"], "absent")
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.store.expireGroups(0.5, set())), ["present"])

    def test_refusals(self) -> None:
        """
        Pushes are refused while stopping, and past the hard limit (what arrives after
        the pause began), with a reason; otherwise they are taken.
        """
        broker = self.broker()
        self.assertIsNone(broker.refusal())
        self.assertEqual(broker.flow.hardLimit, 1100)
        self.successResultOf(broker.push(messages(*["t"] * 1100)))
        self.assertIn("full", broker.refusal())
        broker.stopping = True
        self.assertIn("shutting down", broker.refusal())
        self.clock.advance(0)


class PoisonMixin:
    """
    A message that kills its consumer every time (a poison message) must not take
    the neighbours of its window to the dead letters: the window is redelivered
    once as a batch, then one entry at a time, and only the entry that failed
    alone --max-deliver times is dead-lettered.  Run against every store.
    """

    maxDeliver = 3

    def makeStore(self):
        raise NotImplementedError

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = self.makeStore()
        self.broker = QueueBroker(self.store, self.clock, maxQueued=1000, maxInFlight=50, maxDeliver=self.maxDeliver)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def consume(self, poison: int, limit: int = 500) -> tuple[Counter, list[int], int]:
        """
        Consumers connect one after another; each acknowledges every delivery it
        receives, and dies (leaves without acknowledging it) on one that holds
        C{poison}.  Return how often each offset was received, what was
        acknowledged, and how many consumers it took.
        """
        received: Counter = Counter()
        acked: list[int] = []
        for number in range(limit):
            consumer = FakeConsumer(f"c{number}", explicitAck=True)
            self.broker.addConsumer(consumer)
            self.clock.advance(0)
            seen = 0
            while len(consumer.deliveries) > seen:
                entries, _ = consumer.deliveries[seen]
                seen += 1
                received.update(entry.offset for entry in entries)
                if poison in [entry.offset for entry in entries]:
                    break
                acked.extend(entry.offset for entry in entries)
                self.assertIsNotNone(self.broker.ack(consumer, entries[-1].offset))
                self.clock.advance(0)
            self.successResultOf(self.broker.removeConsumer(consumer))
            self.clock.advance(0)
            if self.store.retained == 0:
                return received, acked, number + 1
        self.fail(f"not done after {limit} consumers: {self.store.retained} entries left")

    def test_poisonAloneDeadLettered(self) -> None:
        """
        A window of 50 with the poison at offset 10 (and 10 more entries behind):
        every neighbour is delivered and acknowledged, none dead-lettered; the
        poison is delivered twice in a batch, then --max-deliver times alone, then
        dead-lettered.
        """
        self.successResultOf(self.broker.push(messages(*[f"t{i}" for i in range(60)])))
        received, acked, consumers = self.consume(poison=10)
        self.assertEqual(sorted(acked), [offset for offset in range(1, 61) if offset != 10])
        [letter] = self.successResultOf(self.store.deadLetters("g"))
        self.assertEqual((letter.offset, letter.deliveries), (10, 2 + self.maxDeliver))
        self.assertEqual(received[10], 2 + self.maxDeliver)
        self.assertLessEqual(max(count for offset, count in received.items() if offset != 10), 3)
        # Two batches, then one consumer per failure alone; the neighbours go one by
        # one to consumers that survive them.
        self.assertEqual(consumers, 3 + self.maxDeliver)

    def test_ordinaryDisconnectRedeliversABatch(self) -> None:
        """
        A consumer that leaves once (no poison) has its whole window redelivered at
        once to the next consumer.
        """
        self.successResultOf(self.broker.push(messages(*[f"t{i}" for i in range(50)])))
        leaving = FakeConsumer("leaving", explicitAck=True)
        self.broker.addConsumer(leaving)
        self.clock.advance(0)
        self.successResultOf(self.broker.removeConsumer(leaving))
        self.clock.advance(0)
        later = FakeConsumer("later", explicitAck=True)
        self.broker.addConsumer(later)
        self.clock.advance(0)
        self.assertEqual([len(entries) for entries, _ in later.deliveries], [50])
        self.assertEqual({entry.deliveries for entry in later.deliveries[0][0]}, {2})

    def test_isolatedGoesToAConsumerHoldingNothing(self) -> None:
        """
        With several consumers in the group, an entry that must go alone waits for
        a consumer that holds nothing (here: one that acknowledged its whole window)
        and is then handed out without a new push; the consumer that holds it gets
        nothing more until it acknowledges it.
        """
        self.broker.maxInFlight = 2
        self.successResultOf(self.broker.push(messages("a", "b", "c", "d", "e")))
        first = FakeConsumer("first", explicitAck=True)
        self.broker.addConsumer(first)
        self.clock.advance(0)
        busy = FakeConsumer("busy", explicitAck=True)
        self.broker.addConsumer(busy)
        self.clock.advance(0)
        self.assertEqual((first.offsets, busy.offsets), ([1, 2], [3, 4]))
        self.successResultOf(self.broker.removeConsumer(first))
        self.clock.advance(0)
        again = FakeConsumer("again", explicitAck=True)
        self.broker.addConsumer(again)
        self.clock.advance(0)
        self.assertEqual(again.offsets, [1, 2])
        self.successResultOf(self.broker.removeConsumer(again))
        self.clock.advance(0)
        self.assertEqual(busy.offsets, [3, 4])
        self.assertIsNotNone(self.broker.ack(busy, 3))
        self.clock.advance(0)
        self.assertEqual(busy.offsets, [3, 4])
        self.assertIsNotNone(self.broker.ack(busy, 4))
        self.clock.advance(0)
        self.assertEqual(busy.offsets, [3, 4, 1])
        self.assertEqual(busy.deliveries[-1][0][0].deliveries, 3)
        self.successResultOf(self.broker.push(messages("f")))
        self.clock.advance(0)
        self.assertEqual(busy.offsets, [3, 4, 1])
        self.assertIsNotNone(self.broker.ack(busy, 1))
        self.clock.advance(0)
        self.assertEqual(busy.offsets, [3, 4, 1, 2])
        self.assertIsNotNone(self.broker.ack(busy, 2))
        self.clock.advance(0)
        self.assertEqual(busy.offsets, [3, 4, 1, 2, 5, 6])

    def test_ackWaitFollowsTheSameRule(self) -> None:
        """
        A consumer that stays connected but never acknowledges a delivery holding the
        poison (it hangs on it): the ack wait gives the window back, the neighbours
        are isolated and acknowledged, only the poison is dead-lettered.
        """
        self.broker.ackWait = 30
        self.successResultOf(self.broker.push(messages(*[f"t{i}" for i in range(20)])))
        consumer = FakeConsumer("hangs", explicitAck=True)
        self.broker.addConsumer(consumer)
        self.clock.advance(0)
        seen = 0
        acked: list[int] = []
        for _ in range(100):
            while len(consumer.deliveries) > seen:
                entries, _ = consumer.deliveries[seen]
                seen += 1
                if 5 not in [entry.offset for entry in entries]:
                    acked.extend(entry.offset for entry in entries)
                    self.broker.ack(consumer, entries[-1].offset)
                    self.clock.advance(0)
            if self.store.retained == 0:
                break
            self.clock.advance(31)
            self.successResultOf(ensureDeferred(self.broker.maintain()))
            self.clock.advance(0)
        self.assertEqual(sorted(acked), [offset for offset in range(1, 21) if offset != 5])
        self.assertEqual([letter.offset for letter in self.successResultOf(self.store.deadLetters())], [5])
        self.successResultOf(self.broker.removeConsumer(consumer))
        self.clock.advance(0)


class MemoryPoisonTests(PoisonMixin, SynchronousTestCase):
    def makeStore(self) -> MemoryStore:
        return MemoryStore(now=self.clock.seconds)


class SQLitePoisonTests(PoisonMixin, SynchronousTestCase):
    def makeStore(self) -> SQLiteStore:
        store = SQLiteStore(self.mktemp() + ".sqlite3", runInline=True, now=self.clock.seconds)
        self.addCleanup(store.close)
        return store


class BoundedPauseTests(BrokerTestCase):
    """
    At --max-queued pushers are paused, but for at most pauseLimit seconds: a paused
    connection cannot answer pings, so a longer pause drops the publisher's link and
    its clients never hear why.  After that, pushers are read again and their
    messages refused with an Error until the queue has room.
    """

    def setUp(self) -> None:
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.broker = QueueBroker(self.store, self.clock, maxQueued=10, maxInFlight=100, pauseLimit=5)
        self.pusher = RecordingSender()
        self.broker.addPusher(self.pusher)

    def test_pauseEndsInRefusals(self) -> None:
        """
        Paused at the bound; after pauseLimit seconds resumed, with every push
        refused as full; taken again once 10 % is free, without another resume.
        """
        self.push(*["t"] * 10)
        self.assertEqual((self.pusher.calls, self.broker.refusal()), (["pause"], None))
        self.clock.advance(4.9)
        self.assertEqual(self.pusher.calls, ["pause"])
        self.clock.advance(0.1)
        self.assertEqual((self.pusher.calls, self.broker.refusal()), (["pause", "resume"], FULL_MESSAGE))
        [line] = [e for e in self.events if "still full after" in e["log_format"]]
        self.assertEqual((line["limit"], line["retained"], line["resumeAt"]), (5, 10, 9))
        late = RecordingSender()
        self.broker.addPusher(late)
        self.assertEqual(late.calls, [])
        consumer = self.addConsumer("c1", explicitAck=True)
        self.assertEqual(self.broker.refusal(), FULL_MESSAGE)
        self.ack(consumer, 1)
        self.assertIsNone(self.broker.refusal())
        self.assertEqual(self.pusher.calls, ["pause", "resume"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_roomBeforeTheLimit(self) -> None:
        """
        Room made within the limit resumes pushers and cancels the limit.
        """
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push(*["t"] * 10)
        self.clock.advance(2)
        self.ack(consumer, 1)
        self.assertEqual(self.pusher.calls, ["pause", "resume"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.broker.refusal())

    def test_fullAgainPausesAgain(self) -> None:
        """
        After refusals end, the next time the queue fills pushers are paused again,
        again for at most the limit.
        """
        consumer = self.addConsumer("c1", explicitAck=True)
        self.push(*["t"] * 10)
        self.clock.advance(5)
        self.ack(consumer, 2)
        self.push("u", "v")
        self.assertEqual(self.pusher.calls, ["pause", "resume", "pause"])
        self.clock.advance(5)
        self.assertEqual(self.pusher.calls, ["pause", "resume", "pause", "resume"])
        self.ack(consumer, 3)
        self.assertIsNone(self.broker.refusal())

    def test_stopCancelsTheLimit(self) -> None:
        """
        stop() refuses pushes and leaves no timer behind.
        """
        self.push(*["t"] * 10)
        self.broker.stop()
        self.assertIn("shutting down", self.broker.refusal())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GroupBacklogTests(SynchronousTestCase):
    """
    An absent group (no consumer connected) keeps at most maxGroupBacklog entries:
    past it it loses its oldest, logged and counted, instead of holding every
    producer hostage.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(now=self.clock.seconds)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.broker = QueueBroker(self.store, self.clock, maxQueued=10, maxInFlight=100, maxGroupBacklog=5,
                                  pauseLimit=5)
        self.pusher = RecordingSender()
        self.broker.addPusher(self.pusher)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def lines(self) -> list[tuple[str, int]]:
        return [(e["group"], e["count"]) for e in self.events if "has no consumer connected" in e["log_format"]]

    def test_trimmedWhenTheQueueFills(self) -> None:
        """
        The queue filling up trims absent groups at once (no maintenance run needed),
        so pushers resume; a group with a consumer keeps everything.
        """
        self.successResultOf(self.store.readGroup("absent", "gone", 0))
        present = FakeConsumer("here", group="present")
        self.broker.addConsumer(present)
        self.clock.advance(0)
        self.successResultOf(self.broker.push(messages(*"abcdefghij")))
        self.clock.advance(0)
        self.assertEqual(self.pusher.calls, ["pause", "resume"])
        self.assertEqual((self.lines(), self.broker.droppedForBacklog), ([("absent", 5)], 5))
        self.assertEqual(len(present.offsets), 10)
        self.assertEqual([e.offset for e in self.successResultOf(self.store.readGroup("absent", "back", 10))],
                         [6, 7, 8, 9, 10])

    def test_maintenanceTrims(self) -> None:
        """
        Each maintenance run trims absent groups: one line per group naming it and
        how many it lost.
        """
        for group in ("a1", "a2"):
            self.successResultOf(self.store.readGroup(group, "gone", 0))
        self.successResultOf(self.broker.push(messages(*"abcdefg")))
        self.successResultOf(ensureDeferred(self.broker.maintain()))
        self.clock.advance(0)
        self.assertEqual(self.lines(), [("a1", 2), ("a2", 2)])
        self.assertEqual((self.broker.droppedForBacklog, self.store.retained), (4, 5))
        self.successResultOf(ensureDeferred(self.broker.maintain()))
        self.assertEqual(len(self.lines()), 2)

    def test_noBound(self) -> None:
        """
        Without maxGroupBacklog nothing is trimmed.
        """
        self.broker.maxGroupBacklog = None
        self.successResultOf(self.store.readGroup("absent", "gone", 0))
        self.successResultOf(self.broker.push(messages(*"abcdefg")))
        self.successResultOf(ensureDeferred(self.broker.maintain()))
        self.assertEqual(self.store.retained, 7)


class BrokenStore(MemoryStore):
    """
    A store whose maintenance operations fail (raising, or with a failed Deferred)
    while C{broken}.
    """

    broken = True

    def releaseExpired(self, ackWait):
        if self.broken:
            raise OSError("disk I/O error")
        return super().releaseExpired(ackWait)

    def trimGroupBacklog(self, maxBacklog, active):
        if self.broken:
            return fail(OSError("disk I/O error"))
        return super().trimGroupBacklog(maxBacklog, active)

    def release(self, group, consumer):
        if self.broken:
            return fail(OSError("disk I/O error"))
        return super().release(group, consumer)


class MaintenanceFailureTests(SynchronousTestCase):
    """
    Maintenance runs under a TimerService, whose LoopingCall stops for good at the
    first failure: a store error must be logged and the next run must still come.
    """

    def test_maintainNeverRaises(self) -> None:
        """
        maintain() logs a failing store (once per 10 s) and returns normally.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        broker = QueueBroker(BrokenStore(), clock)
        for _ in range(3):
            self.successResultOf(ensureDeferred(broker.maintain()))
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual([e["error"] for e in errors], ["OSError: disk I/O error"])
        clock.advance(10)

    def test_failedReleaseLogged(self) -> None:
        """
        A consumer that leaves while the store cannot give its entries back (Redis
        away, a full disk) is logged, not an unhandled error: the entries come back
        after the ack wait instead.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        broker = QueueBroker(BrokenStore(), clock)
        consumer = FakeConsumer("c1", explicitAck=True)
        broker.addConsumer(consumer)
        self.assertEqual(self.successResultOf(broker.removeConsumer(consumer)), 0)
        [line] = [e for e in events if "giving back" in e["log_format"]]
        self.assertEqual((line["consumer"], line["error"]), ("c1", "OSError: disk I/O error"))
        clock.advance(10)

    def test_timerKeepsRunning(self) -> None:
        """
        Under a TimerService, maintenance keeps running after failures, and runs
        fully again once the store works.
        """
        clock = Clock()
        store = BrokenStore(now=clock.seconds)
        broker = QueueBroker(store, clock, maxGroupBacklog=1)
        service = TimerService(1.0, broker.maintenance)
        service.clock = clock
        service.startService()
        for _ in range(5):
            clock.advance(1)
        self.assertTrue(service.running and service._loop.running)
        store.broken = False
        self.successResultOf(store.readGroup("absent", "gone", 0))
        self.successResultOf(store.append(messages("a", "b", "c")))
        clock.advance(1)
        self.assertEqual(broker.droppedForBacklog, 2)
        self.successResultOf(service.stopService())
        clock.advance(10)
        self.assertEqual(clock.getDelayedCalls(), [])


class FailingAcksStore(MemoryStore):
    """
    A store that cannot record acknowledgements while C{full} (a full disk).
    """

    full = False

    def ack(self, group, offsets):
        if self.full:
            return fail(OSError("database or disk is full"))
        return super().ack(group, offsets)


class UnstoredAckTests(SynchronousTestCase):
    """
    An acknowledgement the store failed to record is not forgotten: its entries
    would otherwise stay pending, holding the queue full, until the ack wait.
    """

    def test_retriedAtMaintenance(self) -> None:
        clock = Clock()
        store = FailingAcksStore(now=clock.seconds)
        broker = QueueBroker(store, clock, maxQueued=3, maxInFlight=10)
        pusher = RecordingSender()
        broker.addPusher(pusher)
        consumer = FakeConsumer("c1", explicitAck=True)
        broker.addConsumer(consumer)
        self.successResultOf(broker.push(messages("a", "b", "c")))
        clock.advance(0)
        self.assertEqual((consumer.offsets, pusher.calls), ([1, 2, 3], ["pause"]))
        store.full = True
        self.assertEqual(self.successResultOf(broker.ack(consumer, 3)), 0)
        self.assertEqual(len(self.successResultOf(store.pending("g"))), 3)
        self.successResultOf(ensureDeferred(broker.maintain()))
        self.assertEqual(len(self.successResultOf(store.pending("g"))), 3)
        store.full = False
        self.successResultOf(ensureDeferred(broker.maintain()))
        clock.advance(0)
        self.assertEqual((self.successResultOf(store.pending("g")), store.retained), ([], 0))
        self.assertEqual(pusher.calls, ["pause", "resume"])
        clock.advance(10)
        self.assertEqual(clock.getDelayedCalls(), [])
