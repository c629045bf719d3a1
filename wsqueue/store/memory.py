# -*- test-case-name: tests.test_store -*-
"""
An in-memory L{IMessageStore}: fast, and gone when the process ends.

Entries are kept until every group has acknowledged them (or a retention limit
drops them), and the newest C{historyKeep} beyond that, for history reads.  With
no group at all, entries are kept for the first group that comes, as a FIFO
queue would.  The caller (msgqueue) bounds how many entries it lets in.
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from wsqueue.store.base import ISOLATE_AFTER, DeadLetter, Entry, History, IMessageStore, PendingEntry
from wsqueue.topics import isPattern, matches

MAX_PRODUCERS_REMEMBERED = 100_000
"""How many producers' last sequence numbers are kept, most recently seen first kept."""

MAX_DEAD_LETTERS = 10_000
"""How many dead letters are kept in memory, newest kept."""


class _Pending:
    """
    One delivered, unacknowledged entry of a group: who holds it ("" once given
    back), how many times it was handed out, how many of those alone, and when.
    """

    __slots__ = ("alone", "consumer", "deliveredAt", "deliveries")

    def __init__(self, consumer: str, deliveries: int, alone: int, deliveredAt: float) -> None:
        self.consumer = consumer
        self.deliveries = deliveries
        self.alone = alone
        self.deliveredAt = deliveredAt


class _Group:
    """
    One consumer group's position: the next entry it has never seen, entries given
    back for redelivery, entries pending per consumer, and when it was last used.
    """

    __slots__ = ("lastActive", "nextOffset", "pending", "redeliver")

    def __init__(self, nextOffset: int, now: float) -> None:
        self.nextOffset = nextOffset
        self.redeliver: list[int] = []
        # offset -> its delivery state; given-back entries stay here until handed out again.
        self.pending: dict[int, _Pending] = {}
        self.lastActive = now

    def lowestNeeded(self) -> int:
        lowest = self.nextOffset
        if self.redeliver:
            lowest = min(lowest, self.redeliver[0])
        if self.pending:
            lowest = min(lowest, min(self.pending))
        return lowest

    def holds(self, consumer: str) -> bool:
        """
        Whether C{consumer} holds an entry of this group (scanned: only asked when a
        given-back entry must go alone, which is rare).
        """
        return any(state.consumer == consumer for state in self.pending.values())

    def drop(self, offset: int) -> None:
        """
        Forget a pending or given-back entry, as if it had been acknowledged.
        """
        if self.pending.pop(offset, None) is not None and offset in self.redeliver:
            self.redeliver.remove(offset)

    def forget(self, offset: int) -> bool:
        """
        Drop C{offset} (retention removed it); say whether the group still needed it.
        """
        needed = offset >= self.nextOffset or offset in self.pending
        if offset >= self.nextOffset:
            self.nextOffset = offset + 1
        self.drop(offset)
        return needed


@implementer(IMessageStore)
class MemoryStore:
    """
    Entries in a deque, groups in a dict; every operation completes synchronously.
    Nothing leaves the process, so no checksums are kept (C{damagedEntries} stays 0).

    @param now: the time, for delivery and storage timestamps (a test passes a clock's).
    """

    damagedEntries = 0

    def __init__(self, now: Callable[[], float] = time.time, historyKeep: int = 0) -> None:
        self.epoch = uuid.uuid4().hex
        self.historyKeep = historyKeep
        self._now = now
        # The per-topic index of history reads: each topic's offsets, oldest first.
        self._byTopic: dict[str, deque[int]] = {}
        self._needed = 1
        self._entries: deque[Entry] = deque()
        self._storedAt: deque[float] = deque()
        self._bytes = 0
        self._firstOffset = 1
        self._nextOffset = 1
        self._groups: dict[str, _Group] = {}
        self._deadLetters: deque[DeadLetter] = deque(maxlen=MAX_DEAD_LETTERS)
        self._producers: dict[str, int] = {}

    @property
    def retained(self) -> int:
        return len(self._entries)

    @property
    def retainedBytes(self) -> int:
        return self._bytes

    @property
    def backlog(self) -> int:
        return self._nextOffset - max(self._needed, self._firstOffset)

    def append(
        self, messages: Sequence[tuple[str, str]], producer: str | None = None, seqs: Sequence[int] | None = None
    ) -> Deferred[list[int | None]]:
        last = 0
        if producer is not None and seqs:
            last = self._producers.pop(producer, 0)
            self._producers[producer] = max(last, *seqs)
            if len(self._producers) > MAX_PRODUCERS_REMEMBERED:
                del self._producers[next(iter(self._producers))]
        now = self._now()
        offsets: list[int | None] = []
        for number, (topic, content) in enumerate(messages):
            if seqs and producer is not None and seqs[number] <= last:
                offsets.append(None)
                continue
            offset = self._nextOffset
            self._nextOffset += 1
            self._entries.append(Entry(offset, topic, content))
            topicOffsets = self._byTopic.get(topic)
            if topicOffsets is None:
                topicOffsets = self._byTopic[topic] = deque()
            topicOffsets.append(offset)
            self._storedAt.append(now)
            self._bytes += len(topic) + len(content)
            offsets.append(offset)
        return succeed(offsets)

    def _entry(self, offset: int) -> Entry:
        # Only called for offsets still held: pending and unread ones are never trimmed.
        return self._entries[offset - self._firstOffset]

    def _group(self, group: str) -> _Group:
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(self._firstOffset, self._now())
        return state

    def readGroup(self, group: str, consumer: str, count: int, maxDeliver: int | None = None) -> Deferred[list[Entry]]:
        state = self._group(group)
        now = state.lastActive = self._now()
        result: list[Entry] = []
        deadLettered = self._deadLetterSpent(group, state, maxDeliver, now)
        if state.redeliver and count > 0 and state.pending[state.redeliver[0]].deliveries >= ISOLATE_AFTER:
            # The oldest given-back entry came back more than once: it goes alone, to
            # a consumer holding nothing else, so that only it is blamed if it fails.
            if not state.holds(consumer):
                result.append(self._handOut(state, state.redeliver.pop(0), consumer, now, alone=True))
            if deadLettered:
                self._trim()
            return succeed(result)
        while state.redeliver and len(result) < count:
            if self._deadLetterSpent(group, state, maxDeliver, now):
                deadLettered = True
                continue
            result.append(self._handOut(state, state.redeliver.pop(0), consumer, now, alone=False))
        while state.nextOffset < self._nextOffset and len(result) < count:
            entry = self._entry(state.nextOffset)
            result.append(entry)
            state.pending[entry.offset] = _Pending(consumer, 1, 0, now)
            state.nextOffset += 1
        if deadLettered:
            self._trim()
        return succeed(result)

    @staticmethod
    def _spent(pending: _Pending, maxDeliver: int | None) -> bool:
        return maxDeliver is not None and pending.alone >= maxDeliver

    def _deadLetterSpent(self, group: str, state: _Group, maxDeliver: int | None, now: float) -> bool:
        """
        Move the given-back entries at the head of the group that were delivered
        alone C{maxDeliver} times to the dead letters; say whether there were any.
        """
        moved = False
        while state.redeliver and self._spent(state.pending[state.redeliver[0]], maxDeliver):
            offset = state.redeliver.pop(0)
            pending = state.pending.pop(offset)
            entry = self._entry(offset)
            self._deadLetters.append(DeadLetter(group, offset, entry.topic, entry.content, pending.deliveries, now))
            moved = True
        return moved

    def _handOut(self, state: _Group, offset: int, consumer: str, now: float, alone: bool) -> Entry:
        pending = state.pending[offset]
        pending.consumer = consumer
        pending.deliveries += 1
        pending.alone += alone
        pending.deliveredAt = now
        entry = self._entry(offset)
        return Entry(entry.offset, entry.topic, entry.content, pending.deliveries)

    def ack(self, group: str, offsets: Sequence[int]) -> Deferred[int]:
        state = self._groups.get(group)
        if state is None:
            return succeed(0)
        state.lastActive = self._now()
        acked = 0
        for offset in offsets:
            pending = state.pending.get(offset)
            if pending is not None and pending.consumer:
                del state.pending[offset]
                acked += 1
        self._trim()
        return succeed(acked)

    def pending(self, group: str) -> Deferred[list[PendingEntry]]:
        state = self._groups.get(group)
        if state is None:
            return succeed([])
        return succeed(
            [
                PendingEntry(offset, pending.consumer, pending.deliveries)
                for offset, pending in sorted(state.pending.items())
                if pending.consumer
            ]
        )

    def _giveBack(self, state: _Group, offset: int) -> None:
        # Stays in pending (keeping its delivery count) until handed out again.
        state.pending[offset].consumer = ""
        bisect.insort(state.redeliver, offset)

    def release(self, group: str, consumer: str) -> Deferred[int]:
        state = self._groups.get(group)
        if state is None or not consumer:
            return succeed(0)
        released = [offset for offset, pending in state.pending.items() if pending.consumer == consumer]
        for offset in released:
            self._giveBack(state, offset)
        return succeed(len(released))

    def releaseExpired(self, ackWait: float) -> Deferred[list[tuple[str, int]]]:
        deadline = self._now() - ackWait
        expired = []
        for name, state in self._groups.items():
            for offset, pending in list(state.pending.items()):
                if pending.consumer and pending.deliveredAt < deadline:
                    self._giveBack(state, offset)
                    expired.append((name, offset))
        return succeed(expired)

    def deadLetters(self, group: str | None = None) -> Deferred[list[DeadLetter]]:
        return succeed([letter for letter in self._deadLetters if group is None or letter.group == group])

    def applyRetention(
        self, maxMessages: int | None, maxBytes: int | None, maxAge: float | None
    ) -> Deferred[dict[str, int]]:
        oldest = None if maxAge is None else self._now() - maxAge
        lost: dict[str, int] = {}
        while self._entries and (
            (maxMessages is not None and len(self._entries) > maxMessages)
            or (maxBytes is not None and self._bytes > maxBytes)
            or (oldest is not None and self._storedAt[0] < oldest)
        ):
            entry = self._dropOldest()
            for name, state in self._groups.items():
                if state.forget(entry.offset):
                    lost[name] = lost.get(name, 0) + 1
        return succeed(lost)

    def trimGroupBacklog(self, maxBacklog: int, active: set[str]) -> Deferred[dict[str, int]]:
        lost: dict[str, int] = {}
        for name, state in self._groups.items():
            if name in active:
                continue
            unseen = self._nextOffset - state.nextOffset
            excess = len(state.pending) + unseen - maxBacklog
            if excess <= 0:
                continue
            lost[name] = excess
            # The oldest first: pending entries are all older than the unseen ones.
            fromPending = min(excess, len(state.pending))
            for offset in sorted(state.pending)[:fromPending]:
                state.drop(offset)
            state.nextOffset += excess - fromPending
        if lost:
            self._trim()
        return succeed(lost)

    def expireGroups(self, idle: float, active: set[str]) -> Deferred[list[str]]:
        deadline = self._now() - idle
        expired = [name for name, state in self._groups.items() if name not in active and state.lastActive < deadline]
        for name in expired:
            del self._groups[name]
        self._trim()
        return succeed(expired)

    def _trim(self) -> None:
        # With no group yet, everything is kept for the first one.
        self._needed = min((group.lowestNeeded() for group in self._groups.values()), default=self._firstOffset)
        cut = min(self._needed, self._nextOffset - self.historyKeep)
        while self._entries and self._firstOffset < cut:
            self._dropOldest()

    def _dropOldest(self) -> Entry:
        entry = self._entries.popleft()
        self._storedAt.popleft()
        self._bytes -= len(entry.topic) + len(entry.content)
        self._firstOffset += 1
        offsets = self._byTopic[entry.topic]
        offsets.popleft()
        if not offsets:
            del self._byTopic[entry.topic]
        return entry

    def groupLags(self) -> Deferred[dict[str, int]]:
        return succeed({
            name: max(0, self._nextOffset - max(state.nextOffset, self._firstOffset))
            for name, state in self._groups.items()
        })

    def history(self, pattern: str, after: int, limit: int) -> Deferred[History]:
        latest = self._nextOffset - 1
        complete = after + 1 >= self._firstOffset or after >= latest
        topics = [topic for topic in self._byTopic if matches(pattern, topic)] if isPattern(pattern) else [pattern]
        found: list[int] = []
        for topic in topics:
            offsets = self._byTopic.get(topic)
            if offsets:
                # Newest first, until the offset asked for: the tail, not the log.
                for offset in reversed(offsets):
                    if offset <= after or len(found) > limit:
                        break
                    found.append(offset)
        found.sort()
        if len(found) > limit:
            complete = False
            found = found[:limit]
        return succeed(History(self.epoch, latest, [self._entry(offset) for offset in found], complete))

    def close(self) -> Deferred[None]:
        return succeed(None)
