# -*- test-case-name: tests.test_broker -*-
"""
msgqueue's logic, apart from WebSocket: appending, consumer groups, delivery windows,
acknowledgements and the bound on queued messages.

The protocols in L{wsqueue.msgqueue} only translate frames into calls on a
L{QueueBroker}; everything about who gets which entry, and when pushers must wait,
lives here so that it can be tested without a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsqueue.coalesce import CoalescedCall
from wsqueue.flow import FlowGate, Pausable
from wsqueue.logsummary import RepeatSummary
from wsqueue.store.base import ISOLATE_AFTER, Entry, History, IMessageStore

READ_BATCH = 500
"""The most entries handed to one consumer per store read."""

RETRY_FIRST = 0.1
RETRY_MAX = 2.0
"""A delivery pass that failed (a store error) is tried again after RETRY_FIRST
seconds, doubling up to RETRY_MAX, until one succeeds."""

FULL_MESSAGE = "msgqueue is full; message not stored"


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


class _ConsumerState:
    __slots__ = ("consumer", "inFlight", "isolated")

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        # Offsets delivered and not yet acknowledged, in delivery order.
        self.inFlight: list[int] = []
        # A redelivered entry it was handed alone (see ISOLATE_AFTER): it gets nothing
        # more until it acknowledges that one, so that only it is blamed if it fails.
        self.isolated: int | None = None


def isolatedRead(entries: list[Entry]) -> bool:
    """
    Whether a store read handed out one given-back entry alone (see L{ISOLATE_AFTER}).
    """
    return len(entries) == 1 and entries[0].deliveries > ISOLATE_AFTER


def describe(failure: Failure) -> str:
    """
    A failure on one line: its type and message (no traceback: these repeat).
    """
    kind = failure.type
    assert kind is not None  # a Failure always records its exception's type
    return f"{kind.__name__}: {failure.getErrorMessage()}"


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
        (TCP flow control) until consumers have made 10 % room, for at most
        C{pauseLimit} seconds: after that pushers are read again and their messages
        refused with an Error until there is room.  Past the gate's C{hardLimit} (what
        was already read when the pause began) pushes are refused too.
    @ivar flow: the gate that applies that rule (L{wsqueue.flow.FlowGate}); its
        C{pauseLimit}, the longest a pusher stays paused, must stay below the ping
        interval: a paused connection cannot answer the pusher's pings, so a longer
        pause drops the link and its clients never hear why (msgqueue's tap passes
        half of C{--ping-interval}).
    @ivar maxGroupBacklog: the most unacknowledged entries a group without a
        connected consumer keeps; past it its oldest are dropped, logged and counted
        in C{droppedForBacklog}, checked each maintenance run and as soon as the
        queue is full (L{None}: no bound).
    @ivar maxInFlight: how many unacknowledged entries one explicit-ack consumer may
        hold; at-most-once consumers are paced by their connection's write buffer.
    @ivar ackWait: seconds an explicit-ack consumer has to acknowledge an entry
        before it goes back to its group.
    @ivar maxDeliver: deliveries alone (see L{ISOLATE_AFTER}) of one entry before it
        moves to the dead letters.
    @ivar storeErrors: summarises repeated store failures (delivery, maintenance,
        pushes) in the log: the first at once, then a count every 10 s.
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
        pauseLimit: float = 10.0,
        maxGroupBacklog: int | None = None,
        historyMax: int = 10_000,
    ) -> None:
        self.store = store
        self.historyMax = historyMax
        self.stored = 0
        """Messages appended (for C{--metrics-port})."""
        self.delivered = 0
        """Entries handed to consumers, redeliveries included."""
        self.appendFailure: str | None = None
        """Why the last append failed, until one succeeds (msgqueue's C{/readyz})."""
        self.groupLags: dict[str, int] | None = None
        """Each group's lag as the last maintenance run read it, when the metrics ask
        for it (set to an empty dict to start reading it)."""
        self.appendTimer: Callable[[float], None] | None = None
        """Told how long each append took, in seconds (the store latency histogram)."""
        self.clock = clock
        # Up to a push batch (wire.BATCH_MESSAGES, 1,000) may arrive from each pusher
        # after it was paused: the overshoot allowed past the bound.
        self.flow = FlowGate(clock, maxQueued, pauseLimit, self, hysteresis=10, overshoot=1000)
        self.maxInFlight = maxInFlight
        self.ackWait = ackWait
        self.maxDeliver = maxDeliver
        self.retention = retention
        self.maxGroupBacklog = maxGroupBacklog
        self.stopping = False
        self.droppedForBacklog = 0
        self.storeErrors = RepeatSummary(self.log, clock)
        self._consumers: dict[str, list[_ConsumerState]] = {}
        self._byConsumer: dict[Consumer, _ConsumerState] = {}
        self._trimming = False
        self._dispatchCall = CoalescedCall(clock, self._startDispatch)
        self._dispatching = False
        self._dispatchAgain = False
        self._retryDelay: float | None = None
        # The highest offset this broker appended: a shared store's notification of
        # an append up to it is one this broker's own dispatch already covers.
        self._lastAppended = 0
        self._dispatchFailures = 0
        # Groups where a consumer holding entries read nothing: an entry may be
        # waiting for a consumer that holds nothing (see ISOLATE_AFTER).
        self._awaitingFree: set[str] = set()
        # Acknowledgements the store failed to record, by group: tried again at the
        # next maintenance run (else their entries would wait for the ack wait).
        self._unstoredAcks: dict[str, list[int]] = {}

    def groupPending(self) -> dict[str, int]:
        """
        For each group with a consumer connected, how many entries its consumers
        hold unacknowledged.
        """
        return {group: sum(len(state.inFlight) for state in states) for group, states in self._consumers.items()}

    def history(self, pattern: str, after: int) -> Deferred[History]:
        """
        What the store still holds of C{pattern} above C{after}, at most
        C{historyMax} messages (more is not complete: the client reloads instead).
        """
        return self.store.history(pattern, after, self.historyMax)

    def stop(self) -> None:
        """
        msgqueue is shutting down: refuse pushes from now on, and leave no timer behind.
        """
        self.stopping = True
        # Paused pushers stay paused: what they sent is not refused but left unread,
        # for their publisher to resend to the next msgqueue.
        self.flow.stop()
        self._dispatchCall.cancel()
        self.storeErrors.flush()

    # -- pushing ---------------------------------------------------------------

    def addPusher(self, pusher: Pausable) -> None:
        """
        Register a pusher so it is paused while the queue is full.
        """
        self.flow.addSender(pusher)

    def removePusher(self, pusher: Pausable) -> None:
        self.flow.removeSender(pusher)

    @property
    def maxQueued(self) -> int:
        return self.flow.limit

    @maxQueued.setter
    def maxQueued(self, limit: int) -> None:
        self.flow.limit = limit

    @property
    def full(self) -> bool:
        return self.store.backlog >= self.maxQueued

    @property
    def resumeAt(self) -> int:
        """
        Pushers are resumed (and pushes taken again) once the store holds this many
        entries or fewer: 10 % below the bound, so that a queue kept at its bound does
        not pause and resume (and log) once per message.
        """
        return self.flow.resumeAt

    def refusal(self) -> str | None:
        """
        Why a push must be refused now, or L{None} if it can be taken.
        """
        if self.stopping:
            return "msgqueue is shutting down; message not stored"
        if self.flow.refuses(self.store.backlog):
            return FULL_MESSAGE
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
        if self.appendTimer is not None:
            started, timer = self.clock.seconds(), self.appendTimer
            d.addCallback(lambda offsets: (timer(self.clock.seconds() - started), offsets)[1])
        d.addCallbacks(self._appended, self._appendFailed)
        # Read for waiting consumers now, not once the append has committed: the
        # store runs operations in order, so the read sees the new entries (in the
        # same transaction when they are taken together) and, like the append, is
        # answered only after the commit.  That saves a round trip to the store.
        # (Not while a failed delivery waits for its retry: that keeps its backoff.)
        if self._retryDelay is None:
            self._dispatchCall.cancel()
            self._startDispatch()
        return d

    def _appendFailed(self, failure: Failure) -> Failure:
        self.appendFailure = describe(failure)
        return failure

    def _appended(self, offsets: list[int | None]) -> list[int | None]:
        self.appendFailure = None
        self.stored += sum(offset is not None for offset in offsets)
        self._lastAppended = max([self._lastAppended, *(offset for offset in offsets if offset is not None)])
        self._updatePause()
        if getattr(self.store, "confirmsAppends", False):
            # The read that push() started could not see these yet (a store that
            # hands out only what a replica has: Redis with --redis-min-replicas).
            self._scheduleDispatch()
        return offsets

    def entriesAppended(self, upTo: int | None) -> None:
        """
        A store shared by several msgqueue daemons (Redis) says that entries up to
        offset C{upTo} were appended, by any of them (L{None}: perhaps some, while
        its notifications were down): serve waiting consumers now, without polling.
        An append of this broker's own is already being served.
        """
        if upTo is None or upTo > self._lastAppended:
            self._scheduleDispatch()

    def _updatePause(self) -> None:
        self.flow.update(self.store.backlog)

    # -- what the flow gate does, said in the log (FlowListener) ------------------

    def flowPaused(self, level: int, senders: int) -> None:
        self.log.warn(
            "queue full ({retained} messages): pausing {pushers} pusher(s) for at most {limit} s",
            retained=level, pushers=senders, limit=self.flow.pauseLimit,
        )
        # An absent group may be what fills the queue: do not wait for maintenance.
        self._trimBacklogs()

    def flowRefusing(self, level: int, senders: int) -> None:
        # The queue stayed full for pauseLimit seconds: pushers are read again (so
        # that their links stay alive) and what they send is refused until there is room.
        self.log.warn(
            "queue still full after {limit} s ({retained} messages): refusing pushes with an Error until it "
            "holds {resumeAt} or fewer",
            limit=self.flow.pauseLimit, retained=level, resumeAt=self.resumeAt,
        )

    def flowReopened(self, level: int, senders: int, wasPaused: bool) -> None:
        self.log.info("queue has room again ({retained} messages): taking pushes", retained=level)

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
        d.addErrback(self._releaseFailed, consumer)
        return d

    def _released(self, count: int) -> int:
        if count:
            self._scheduleDispatch()
        return count

    def _releaseFailed(self, failure: Failure, consumer: Consumer) -> int:
        # Not lost: what it held goes back to the group after the ack wait instead.
        self.storeErrors.emit(
            "giving back what consumer {consumer} of group {group} held failed: {error}; it goes back after "
            "the ack wait", consumer=consumer.name, group=consumer.group, error=describe(failure),
        )
        return 0

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
        # Only a full window (or an entry held alone) kept entries from this consumer.
        heldBack = len(state.inFlight) >= self.maxInFlight or state.isolated is not None
        done = state.inFlight[: index + 1]
        del state.inFlight[: index + 1]
        if state.isolated in done:
            state.isolated = None
        # A consumer that now holds nothing may take an entry that must go alone.
        freed = not state.inFlight and consumer.group in self._awaitingFree
        d = self.store.ack(consumer.group, done)
        d.addCallbacks(self._acked, self._ackFailed, callbackArgs=(heldBack or freed,),
                       errbackArgs=(consumer.group, done))
        return d

    def _ackFailed(self, failure: Failure, group: str, offsets: list[int]) -> int:
        """
        The store could not record an acknowledgement (a full disk): keep it for the
        next maintenance run, so that its entries do not hold the queue full until
        the ack wait gives them back.
        """
        self.storeErrors.emit("recording acknowledgements failed (tried again at the next maintenance run): "
                              "{error}", error=describe(failure))
        self._unstoredAcks.setdefault(group, []).extend(offsets)
        return 0

    def _acked(self, count: int, dispatch: bool) -> int:
        self._updatePause()
        if dispatch:
            # Otherwise the last dispatch already handed out everything there was.
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
            if state.isolated is not None:
                return 0
            return min(READ_BATCH, self.maxInFlight - len(state.inFlight))
        return READ_BATCH

    def _scheduleDispatch(self) -> None:
        # Never sooner than a pending retry: a failing store keeps its backoff.
        if not self._dispatchCall.pending:
            self._dispatchCall.schedule()

    def _startDispatch(self) -> None:
        if self._dispatching:
            # A dispatch is waiting on the store: run again after it (rescheduling
            # now would spin on callLater(0) until the store answers).
            self._dispatchAgain = True
            return
        self._dispatching = True
        d = ensureDeferred(self._dispatch())
        d.addCallbacks(self._dispatchSucceeded, self._dispatchFailed)

    def _dispatchSucceeded(self, _: object) -> None:
        self._dispatching = False
        if self._retryDelay is not None:
            self.log.info("delivering queued messages works again after {failures} failed attempt(s)",
                          failures=self._dispatchFailures)
            self._retryDelay = None
            self._dispatchFailures = 0
        if self._dispatchAgain:
            self._dispatchAgain = False
            self._scheduleDispatch()

    def _dispatchFailed(self, failure: Failure) -> None:
        """
        A delivery pass failed (the store could not read or write): log it once per
        interval and try again by itself, backing off, so that stored messages reach
        their consumers once the store works again without waiting for a new push.
        """
        self._dispatching = False
        self._dispatchAgain = False
        self._dispatchFailures += 1
        self._retryDelay = RETRY_FIRST if self._retryDelay is None else min(self._retryDelay * 2, RETRY_MAX)
        self.storeErrors.emit(
            "delivering queued messages failed (retrying every {most} s at most): {error}",
            most=RETRY_MAX, error=describe(failure),
        )
        self._dispatchCall.cancel()
        if not self.stopping:
            self._dispatchCall.schedule(self._retryDelay)

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
                    holding = bool(state.inFlight)
                    if not holding:
                        self._awaitingFree.discard(group)
                    entries = await self.store.readGroup(group, state.consumer.name, room, self.maxDeliver)
                    if not entries:
                        if holding:
                            # Nothing for this one; an entry may be waiting to go alone
                            # to a consumer that holds nothing: try the others.
                            self._awaitingFree.add(group)
                            continue
                        break
                    alone = isolatedRead(entries)
                    exhausted = len(entries) < room and not alone
                    if state.consumer not in self._byConsumer:
                        # It left while the store read: give the entries back.
                        await self.store.release(group, state.consumer.name)
                        progress = True
                        continue
                    if state.consumer.explicitAck:
                        state.inFlight.extend(entry.offset for entry in entries)
                        if alone:
                            state.isolated = entries[0].offset
                    else:
                        await self.store.ack(group, [entry.offset for entry in entries])
                    self.delivered += len(entries)
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

    # -- absent groups ---------------------------------------------------------

    def _trimBacklogs(self) -> None:
        """
        Drop the oldest entries of absent groups past C{maxGroupBacklog} now (the
        queue has just become full).
        """
        if self.maxGroupBacklog is None or self._trimming:
            return
        self._trimming = True
        d = self.store.trimGroupBacklog(self.maxGroupBacklog, set(self._consumers))
        d.addCallback(self._trimmed)
        d.addErrback(lambda failure: self.storeErrors.emit(
            "dropping the backlog of absent groups failed: {error}", error=describe(failure)))
        d.addBoth(lambda _: setattr(self, "_trimming", False))

    def _trimmed(self, lost: dict[str, int]) -> None:
        for group, count in sorted(lost.items()):
            self.droppedForBacklog += count
            self.log.warn(
                "group {group} has no consumer connected and more than {limit} unacknowledged message(s): "
                "dropped its {count} oldest",
                group=group, limit=self.maxGroupBacklog, count=count,
            )
        if lost:
            self._updatePause()

    # -- maintenance -----------------------------------------------------------

    def maintenance(self) -> Deferred[None]:
        """
        L{maintain} as a Deferred that never fails, for a L{TimerService}: its
        LoopingCall would stop for good at the first failure.
        """
        d = ensureDeferred(self.maintain())
        d.addErrback(lambda failure: self.storeErrors.emit("maintenance failed: {error}", error=describe(failure)))
        return d

    async def maintain(self) -> None:
        """
        Run once a second or so: give back deliveries not acknowledged within the ack
        wait, apply the retention limits and the absent groups' bound, and remove
        expired groups.  A store failure is logged (summarised) and the next run
        tries again; nothing escapes.
        """
        try:
            changed = await self._maintain()
        except Exception:  # noqa: BLE001 -- a store failure must not stop maintenance for good
            self.storeErrors.emit("maintenance failed (tried again at the next run): {error}",
                                  error=describe(Failure()))
            return
        # Also without a change here: another msgqueue sharing the store (Redis) may
        # have made room, and a paused or refusing gate would not hear of it otherwise.
        self._updatePause()
        if self.groupLags is not None:
            try:
                self.groupLags = await self.store.groupLags()
            except Exception:  # noqa: BLE001 -- the metrics keep the last figures
                self.storeErrors.emit("reading the groups' lag failed: {error}", error=describe(Failure()))
        if changed:
            self._scheduleDispatch()

    async def _maintain(self) -> bool:
        changed = await self._retryAcks()
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
        if self.maxGroupBacklog is not None:
            lost = await self.store.trimGroupBacklog(self.maxGroupBacklog, set(self._consumers))
            changed = changed or bool(lost)
            self._trimmed(lost)
        if retention.groupExpiry is not None:
            for group in await self.store.expireGroups(retention.groupExpiry, set(self._consumers)):
                changed = True
                self.log.warn("group {group} removed: idle for more than {expiry} s", group=group,
                              expiry=retention.groupExpiry)
        return changed

    async def _retryAcks(self) -> bool:
        """
        Record the acknowledgements the store failed to record earlier; say whether
        any was.  An entry given back meanwhile is not acknowledged by this (the
        store ignores it) and is delivered again: at least once.
        """
        recorded = False
        for group in list(self._unstoredAcks):
            offsets = self._unstoredAcks.pop(group)
            try:
                recorded = bool(await self.store.ack(group, offsets)) or recorded
            except Exception:
                self._unstoredAcks.setdefault(group, []).extend(offsets)
                raise
        return recorded

    def _forgetInFlight(self, expired: list[tuple[str, int]]) -> None:
        byGroup: dict[str, set[int]] = {}
        for group, offset in expired:
            byGroup.setdefault(group, set()).add(offset)
        for group, offsets in byGroup.items():
            for state in self._consumers.get(group, ()):
                state.inFlight = [offset for offset in state.inFlight if offset not in offsets]
                if state.isolated in offsets:
                    state.isolated = None
