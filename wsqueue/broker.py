# -*- test-case-name: tests.test_broker -*-
"""
msgqueue's logic, apart from WebSocket: appending, consumer groups, delivery windows,
acknowledgements and the bound on queued messages.

The protocols in L{wsqueue.msgqueue} only translate frames into calls on a
L{QueueBroker}; everything about who gets which entry, and when pushers must wait,
lives here so that it can be tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsqueue.store.base import Entry, IMessageStore

READ_BATCH = 500
"""The most entries handed to one consumer per store read."""



class Consumer(Protocol):
    """
    What the broker needs from a C{/popmsg} connection.
    """

    name: str
    group: str
    explicitAck: bool
    writable: bool

    def deliver(self, entries: list[Entry], epoch: str) -> None:
        """Send C{entries} to the consumer."""


class Pausable(Protocol):
    """
    What the broker needs from a C{/pushmsg} connection to apply flow control.
    """

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


class _ConsumerState:
    __slots__ = ("consumer", "inFlight")

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        # Offsets delivered and not yet acknowledged, in delivery order.
        self.inFlight: list[int] = []


@dataclass(frozen=True)
class Retention:
    """
    What an absent group may pin: past any of these the oldest entries are dropped
    (L{None}: no limit), and groups idle for C{groupExpiry} seconds are removed.
    """

    maxMessages: int | None = None
    maxBytes: int | None = None
    maxAge: float | None = None
    groupExpiry: float | None = 7 * 24 * 3600


class QueueBroker:
    """
    Puts pushed messages into an L{IMessageStore} and hands them to consumer groups.

    @ivar maxQueued: when the store holds this many entries, every pusher is paused
        (TCP flow control) until consumers have made 10 % room; past L{hardLimit}
        (what was already read when the pause began) pushes are refused with an error.
    @ivar maxInFlight: how many unacknowledged entries one explicit-ack consumer may
        hold; at-most-once consumers are paced by their connection's write buffer.
    @ivar ackWait: seconds an explicit-ack consumer has to acknowledge an entry
        before it goes back to its group.
    @ivar maxDeliver: deliveries of one entry before it moves to the dead letters.
    @ivar stopping: set when msgqueue shuts down: pushes are refused from then on.
    """

    log = Logger()

    def __init__(
        self,
        store: IMessageStore,
        clock: IReactorTime,
        maxQueued: int = 100_000,
        maxInFlight: int = 1000,
        ackWait: float = 30.0,
        maxDeliver: int | None = 5,
        retention: Retention = Retention(),
    ) -> None:
        self.store = store
        self.clock = clock
        self.maxQueued = maxQueued
        self.hardLimit = maxQueued + max(1000, maxQueued // 10)
        self.maxInFlight = maxInFlight
        self.ackWait = ackWait
        self.maxDeliver = maxDeliver
        self.retention = retention
        self.stopping = False
        self._consumers: dict[str, list[_ConsumerState]] = {}
        self._byConsumer: dict[Consumer, _ConsumerState] = {}
        self._pushers: set[Pausable] = set()
        self._paused = False
        self._dispatchCall = None
        self._dispatching = False
        self._dispatchAgain = False

    # -- pushing ---------------------------------------------------------------

    def addPusher(self, pusher: Pausable) -> None:
        """
        Register a pusher so it is paused while the queue is full.
        """
        self._pushers.add(pusher)
        if self._paused:
            pusher.pauseProducing()

    def removePusher(self, pusher: Pausable) -> None:
        self._pushers.discard(pusher)

    @property
    def full(self) -> bool:
        return self.store.retained >= self.maxQueued

    def refusal(self) -> str | None:
        """
        Why a push must be refused now, or L{None} if it can be taken.
        """
        if self.stopping:
            return "msgqueue is shutting down; message not stored"
        if self.store.retained >= self.hardLimit:
            return "msgqueue is full; message not stored"
        return None

    def push(
        self,
        messages: Sequence[tuple[str, str]],
        producer: str | None = None,
        seqs: Sequence[int] | None = None,
    ) -> Deferred[list[int | None]]:
        """
        Append C{messages}; fire with their offsets once the store has them.

        @param seqs: C{producer}'s sequence number of each message; the store skips
            (and fires L{None} for) those it already has from that producer.
        """
        d = self.store.append(messages, producer, seqs)
        d.addCallback(self._appended)
        # Read for waiting consumers now, not once the append has committed: the
        # store runs operations in order, so the read sees the new entries (in the
        # same transaction when they are taken together) and, like the append, is
        # answered only after the commit.  That saves a round trip to the store.
        if self._dispatchCall is not None:
            self._dispatchCall.cancel()
            self._dispatchCall = None
        self._startDispatch()
        return d

    def _appended(self, offsets: list[int]) -> list[int]:
        self._updatePause()
        return offsets

    def _updatePause(self) -> None:
        if not self._paused and self.full:
            self._paused = True
            self.log.warn(
                "queue full ({retained} messages): pausing {pushers} pusher(s)",
                retained=self.store.retained,
                pushers=len(self._pushers),
            )
            for pusher in list(self._pushers):
                pusher.pauseProducing()
        elif self._paused and self.store.retained <= self.maxQueued - max(1, self.maxQueued // 10):
            # Resume only once 10 % is free again, so that a queue kept at its bound
            # does not pause and resume (and log) once per message.
            self._paused = False
            self.log.info("queue has room again: resuming pushers")
            for pusher in list(self._pushers):
                pusher.resumeProducing()

    # -- consuming -------------------------------------------------------------

    def addConsumer(self, consumer: Consumer) -> None:
        state = _ConsumerState(consumer)
        self._byConsumer[consumer] = state
        self._consumers.setdefault(consumer.group, []).append(state)
        self._scheduleDispatch()

    def removeConsumer(self, consumer: Consumer) -> Deferred[int] | None:
        """
        Forget a consumer that has gone; its unacknowledged entries go back to its
        group for the next consumer.
        """
        state = self._byConsumer.pop(consumer, None)
        if state is None:
            return None
        members = self._consumers[consumer.group]
        members.remove(state)
        if not members:
            del self._consumers[consumer.group]
        d = self.store.release(consumer.group, consumer.name)
        d.addCallback(self._released)
        return d

    def _released(self, count: int) -> int:
        if count:
            self._scheduleDispatch()
        return count

    def ack(self, consumer: Consumer, upTo: int) -> Deferred[int] | None:
        """
        Acknowledge offset C{upTo} and every entry delivered to C{consumer} before it.

        Acks follow delivery order, not offset order: entries given back by another
        consumer of the group can arrive after higher offsets, and a WebSocket keeps
        order, so the consumer has received everything delivered before C{upTo}.
        """
        state = self._byConsumer.get(consumer)
        if state is None:
            return None
        try:
            index = state.inFlight.index(upTo)
        except ValueError:
            return None
        wasFull = len(state.inFlight) >= self.maxInFlight
        done = state.inFlight[: index + 1]
        del state.inFlight[: index + 1]
        d = self.store.ack(consumer.group, done)
        d.addCallback(self._acked, wasFull)
        return d

    def _acked(self, count: int, wasFull: bool) -> int:
        self._updatePause()
        if wasFull:
            # Only a full window held entries back from this consumer; otherwise the
            # last dispatch already handed out everything there was.
            self._scheduleDispatch()
        return count

    def consumerWritable(self) -> None:
        """
        A consumer's connection can take more data again.
        """
        self._scheduleDispatch()

    def _room(self, state: _ConsumerState) -> int:
        if not state.consumer.writable:
            return 0
        if state.consumer.explicitAck:
            return min(READ_BATCH, self.maxInFlight - len(state.inFlight))
        return READ_BATCH

    def _scheduleDispatch(self) -> None:
        if self._dispatchCall is None:
            self._dispatchCall = self.clock.callLater(0, self._startDispatch)

    def _startDispatch(self) -> None:
        self._dispatchCall = None
        if self._dispatching:
            # A dispatch is waiting on the store: run again after it (rescheduling
            # now would spin on callLater(0) until the store answers).
            self._dispatchAgain = True
            return
        self._dispatching = True
        d = ensureDeferred(self._dispatch())
        d.addErrback(lambda f: self.log.failure("delivering queued messages failed", f))
        d.addBoth(self._dispatchDone)

    def _dispatchDone(self, _: object) -> None:
        self._dispatching = False
        if self._dispatchAgain:
            self._dispatchAgain = False
            self._scheduleDispatch()

    async def _dispatch(self) -> None:
        for group in list(self._consumers):
            # Round-robin: each pass gives one batch to each consumer with room.
            progress = True
            while progress:
                progress = False
                for state in list(self._consumers.get(group, ())):
                    room = self._room(state)
                    if room <= 0 or state.consumer not in self._byConsumer:
                        continue
                    entries = await self.store.readGroup(group, state.consumer.name, room, self.maxDeliver)
                    if not entries:
                        break
                    exhausted = len(entries) < room
                    if state.consumer not in self._byConsumer:
                        # It left while the store read: give the entries back.
                        await self.store.release(group, state.consumer.name)
                        progress = True
                        continue
                    if state.consumer.explicitAck:
                        state.inFlight.extend(entry.offset for entry in entries)
                    else:
                        await self.store.ack(group, [entry.offset for entry in entries])
                    state.consumer.deliver(entries, self.store.epoch)
                    # Round-robin across dispatches too: the next batch starts elsewhere.
                    members = self._consumers.get(group)
                    if members and members[-1] is not state:
                        members.remove(state)
                        members.append(state)
                    if exhausted:
                        # A short read: the group has nothing more now (see readGroup),
                        # so no read that would come back empty.
                        break
                    progress = True
        self._updatePause()

    # -- maintenance -----------------------------------------------------------

    async def maintain(self) -> None:
        """
        Run once a second or so: give back deliveries not acknowledged within the ack
        wait, apply the retention limits, and remove expired groups.
        """
        changed = False
        expired = await self.store.releaseExpired(self.ackWait)
        if expired:
            changed = True
            self._forgetInFlight(expired)
            self.log.info("{count} delivery(ies) not acknowledged within {wait} s go back to their groups",
                          count=len(expired), wait=self.ackWait)
        retention = self.retention
        if (retention.maxMessages, retention.maxBytes, retention.maxAge) != (None, None, None):
            lost = await self.store.applyRetention(retention.maxMessages, retention.maxBytes, retention.maxAge)
            changed = changed or bool(lost)
            for group, count in sorted(lost.items()):
                self.log.warn("retention limits dropped {count} unacknowledged message(s) of group {group}",
                              count=count, group=group)
        if retention.groupExpiry is not None:
            for group in await self.store.expireGroups(retention.groupExpiry, set(self._consumers)):
                changed = True
                self.log.warn("group {group} removed: idle for more than {expiry} s", group=group,
                              expiry=retention.groupExpiry)
        if changed:
            self._updatePause()
            self._scheduleDispatch()

    def _forgetInFlight(self, expired: list[tuple[str, int]]) -> None:
        byGroup: dict[str, set[int]] = {}
        for group, offset in expired:
            byGroup.setdefault(group, set()).add(offset)
        for group, offsets in byGroup.items():
            for state in self._consumers.get(group, ()):
                state.inFlight = [offset for offset in state.inFlight if offset not in offsets]
