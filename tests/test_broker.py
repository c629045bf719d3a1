"""
Tests for L{wsqueue.broker.QueueBroker}: who gets which entry, acknowledgements, and
when pushers must wait.

The broker is driven with a L{Clock} (dispatch runs on C{callLater(0, ...)}), a real
L{MemoryStore} and fake consumers and pushers that record what they are told, so no
network is involved.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.broker import READ_BATCH, QueueBroker, Retention
from wsqueue.store.base import Entry
from wsqueue.store.memory import MemoryStore


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


class FakePusher:
    """
    A C{/pushmsg} connection that records flow-control calls.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")


class SlowStore:
    """
    A store whose reads wait until the test lets them finish, to exercise what
    happens while the broker waits on a durable or networked store.
    """

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.epoch = store.epoch
        self.reads: list[Deferred] = []
        self.failReads = False

    @property
    def retained(self) -> int:
        return self.store.retained

    def append(self, messages, producer=None, seqs=None):
        return self.store.append(messages, producer, seqs)

    def readGroup(self, group, consumer, count, maxDeliver=None):
        if self.failReads:
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
        self.pusher = FakePusher()
        self.broker.addPusher(self.pusher)

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
        late = FakePusher()
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

    def test_failedReadIsLogged(self) -> None:
        """
        A store failure during dispatch is logged, and a later dispatch still runs.
        """
        self.store.failReads = True
        consumer = FakeConsumer("c1")
        self.broker.addConsumer(consumer)
        self.broker.push(messages("a"))
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.store.failReads = False
        self.broker.consumerWritable()
        self.settle()
        self.assertEqual(consumer.offsets, [1])


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
        After --max-deliver deliveries an entry is dead-lettered, not delivered again.
        """
        broker = self.broker(maxDeliver=2)
        self.successResultOf(broker.push(messages("a")))
        for number in range(3):
            consumer = FakeConsumer(f"c{number}", explicitAck=True)
            broker.addConsumer(consumer)
            self.clock.advance(0)
            self.assertEqual(consumer.offsets, [1] if number < 2 else [])
            self.successResultOf(broker.removeConsumer(consumer))
            self.clock.advance(0)
        [letter] = self.successResultOf(self.store.deadLetters("g"))
        self.assertEqual((letter.offset, letter.deliveries), (1, 2))

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
        self.assertEqual(broker.hardLimit, 1100)
        self.successResultOf(broker.push(messages(*["t"] * 1100)))
        self.assertIn("full", broker.refusal())
        broker.stopping = True
        self.assertIn("shutting down", broker.refusal())
        self.clock.advance(0)
