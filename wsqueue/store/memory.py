# -*- test-case-name: tests.test_store -*-
"""
An in-memory L{IMessageStore}: fast, and gone when the process ends.

Entries are kept until every group has acknowledged them.  With no group at all,
entries are kept for the first group that comes, as a FIFO queue would.  The caller
(msgqueue) bounds how many entries it lets in.
"""

from __future__ import annotations

import bisect
import uuid
from collections import deque
from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from wsqueue.store.base import Entry, IMessageStore, PendingEntry

MAX_PRODUCERS_REMEMBERED = 100_000
"""How many producers' last sequence numbers are kept, most recently seen first kept."""


class _Group:
    """
    One consumer group's position: the next entry it has never seen, entries given
    back for redelivery, and entries pending per consumer.
    """

    __slots__ = ("nextOffset", "pending", "redeliver")

    def __init__(self, nextOffset: int) -> None:
        self.nextOffset = nextOffset
        self.redeliver: list[int] = []
        # offset -> [consumer, deliveries]; dicts keep delivery order.
        self.pending: dict[int, list] = {}

    def lowestNeeded(self) -> int:
        lowest = self.nextOffset
        if self.redeliver:
            lowest = min(lowest, self.redeliver[0])
        if self.pending:
            lowest = min(lowest, min(self.pending))
        return lowest


@implementer(IMessageStore)
class MemoryStore:
    """
    Entries in a deque, groups in a dict; every operation completes synchronously.
    """

    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex
        self._entries: deque[Entry] = deque()
        self._firstOffset = 1
        self._nextOffset = 1
        self._groups: dict[str, _Group] = {}
        self.lastSequences: dict[str, int] = {}

    @property
    def retained(self) -> int:
        return len(self._entries)

    def append(
        self, messages: Sequence[tuple[str, str]], producer: str | None = None, lastSeq: int | None = None
    ) -> Deferred[list[int]]:
        if producer is not None and lastSeq is not None:
            self.lastSequences[producer] = max(lastSeq, self.lastSequences.pop(producer, 0))
            if len(self.lastSequences) > MAX_PRODUCERS_REMEMBERED:
                del self.lastSequences[next(iter(self.lastSequences))]
        offsets = []
        for topic, content in messages:
            offset = self._nextOffset
            self._nextOffset += 1
            self._entries.append(Entry(offset, topic, content))
            offsets.append(offset)
        return succeed(offsets)

    def _entry(self, offset: int) -> Entry | None:
        index = offset - self._firstOffset
        if 0 <= index < len(self._entries):
            return self._entries[index]
        return None

    def readGroup(self, group: str, consumer: str, count: int) -> Deferred[list[Entry]]:
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(self._firstOffset)
        result: list[Entry] = []
        while state.redeliver and len(result) < count:
            offset = state.redeliver.pop(0)
            entry = self._entry(offset)
            if entry is not None:
                result.append(entry)
                deliveries = state.pending.pop(offset, [consumer, 0])[1]
                state.pending[offset] = [consumer, deliveries + 1]
        while state.nextOffset < self._nextOffset and len(result) < count:
            entry = self._entry(state.nextOffset)
            if entry is not None:
                result.append(entry)
                state.pending[entry.offset] = [consumer, 1]
            state.nextOffset += 1
        return succeed(result)

    def ack(self, group: str, offsets: Sequence[int]) -> Deferred[int]:
        state = self._groups.get(group)
        if state is None:
            return succeed(0)
        acked = 0
        for offset in offsets:
            if state.pending.pop(offset, None) is not None:
                acked += 1
        self._trim()
        return succeed(acked)

    def pending(self, group: str) -> Deferred[list[PendingEntry]]:
        state = self._groups.get(group)
        if state is None:
            return succeed([])
        return succeed(
            [
                PendingEntry(offset, consumer, deliveries)
                for offset, (consumer, deliveries) in sorted(state.pending.items())
                if offset not in state.redeliver
            ]
        )

    def release(self, group: str, consumer: str) -> Deferred[int]:
        state = self._groups.get(group)
        if state is None:
            return succeed(0)
        released = [
            offset
            for offset, (owner, _) in state.pending.items()
            if owner == consumer and offset not in state.redeliver
        ]
        for offset in released:
            # Stays in pending (keeping its delivery count) until handed out again.
            state.pending[offset][0] = ""
            bisect.insort(state.redeliver, offset)
        return succeed(len(released))

    def _trim(self) -> None:
        # With no group yet, everything is kept for the first one.
        lowest = min((group.lowestNeeded() for group in self._groups.values()), default=self._firstOffset)
        while self._entries and self._firstOffset < lowest:
            self._entries.popleft()
            self._firstOffset += 1

    def close(self) -> Deferred[None]:
        return succeed(None)
