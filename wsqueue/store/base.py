# -*- test-case-name: tests.test_store -*-
"""
The storage interface behind msgqueue, modelled on Redis Streams.

A store is an append-only log of entries with increasing offsets, read by consumer
groups: each group has its own position, and each entry handed to a consumer stays
I{pending} for that consumer until it is acknowledged (C{XADD}, C{XREADGROUP},
C{XACK}, C{XPENDING}).  Every method that may touch a disk or a server returns a
L{Deferred}, so a durable or networked store can plug in without changing callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


@dataclass(frozen=True, slots=True)
class Entry:
    """
    One stored message.

    @ivar offset: its position in the store, increasing by one per entry within an epoch.
    """

    offset: int
    topic: str
    content: str


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """
    An entry delivered to a consumer of a group and not yet acknowledged.
    """

    offset: int
    consumer: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """
    An entry a group gave up on after too many deliveries, kept for an operator.
    """

    group: str
    offset: int
    topic: str
    content: str
    deliveries: int
    at: float


class IMessageStore(Interface):
    """
    The queue storage that msgqueue uses.
    """

    epoch = Attribute(
        "A string made when the store was created and kept with it. Offsets are only "
        "comparable within one epoch: a consumer that sees a new epoch starts over."
    )
    retained = Attribute("How many entries the store holds now (an int).")
    def append(
        messages: Sequence[tuple[str, str]], producer: str | None = None, seqs: Sequence[int] | None = None
    ) -> Deferred[list[int | None]]:
        """
        Append C{(topic, content)} pairs in order and fire with their offsets once they
        are stored (for a durable store: committed).

        With C{producer} and C{seqs} (each message's increasing sequence number from
        that producer), a message whose number is not above the highest one stored
        from the producer is skipped as a resend (L{None} in place of its offset).
        The check and the new highest number are part of the append's own
        transaction, so a failed append leaves nothing behind and a resend racing
        with the original is recognised in whichever order they commit.
        """

    def readGroup(group: str, consumer: str, count: int, maxDeliver: int | None = None) -> Deferred[list[Entry]]:
        """
        Hand up to C{count} entries to C{consumer} of C{group}, creating the group at
        the oldest retained entry if it is new.  Entries returned to the group by
        L{release} come first, then entries the group has never seen, in offset order.
        Every returned entry is pending for C{consumer} until L{ack}ed.  An entry that
        has already been delivered C{maxDeliver} times moves to the group's dead
        letters instead (see L{deadLetters}) and does not count against C{count}, so
        fewer than C{count} entries means the group has nothing more to hand out now.
        """

    def ack(group: str, offsets: Sequence[int]) -> Deferred[int]:
        """
        Acknowledge pending entries of C{group}; fire with how many were pending.
        """

    def pending(group: str) -> Deferred[list[PendingEntry]]:
        """
        Fire with the group's pending entries in offset order.
        """

    def release(group: str, consumer: str) -> Deferred[int]:
        """
        Give every entry pending for C{consumer} back to C{group} (the consumer has
        gone), to be handed out again before newer entries; fire with how many.
        """

    def releaseExpired(ackWait: float) -> Deferred[list[tuple[str, int]]]:
        """
        Give back to their groups the entries delivered more than C{ackWait} seconds
        ago and still unacknowledged; fire with their C{(group, offset)}s.
        """

    def deadLetters(group: str | None = None) -> Deferred[list[DeadLetter]]:
        """
        Fire with the dead letters (of one group, or of all), oldest first.
        """

    def applyRetention(
        maxMessages: int | None, maxBytes: int | None, maxAge: float | None
    ) -> Deferred[dict[str, int]]:
        """
        Drop the oldest entries while the store holds more than C{maxMessages}
        entries, C{maxBytes} bytes of topics and contents, or entries older than
        C{maxAge} seconds, even if a group has not acknowledged them; fire with how
        many entries each group lost that way.
        """

    def expireGroups(idle: float, active: set[str]) -> Deferred[list[str]]:
        """
        Remove the groups, other than C{active}, that have not read or acknowledged
        anything for C{idle} seconds; fire with their names.
        """

    def close() -> Deferred[None]:
        """
        Release what the store holds open.
        """
