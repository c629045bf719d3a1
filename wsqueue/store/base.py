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
from typing import NamedTuple

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

ISOLATE_AFTER = 2
"""
A given-back entry already delivered this many times is handed out alone, and only
to a consumer that holds nothing else of its group.

A consumer that dies on one message (a poison message) gives back its whole window.
The first redelivery is a batch, as after any ordinary disconnect; if the window
comes back again, its entries go out one at a time, so that the one that kills its
consumer is the only one blamed for it (see C{maxDeliver} in
L{IMessageStore.readGroup}) and its neighbours are delivered and acknowledged.
"""


class Entry(NamedTuple):
    """
    One stored message.  A named tuple: one is made per message handed out, and a
    tuple is made in half the time of a frozen dataclass.

    @ivar offset: its position in the store, increasing by one per entry within an epoch.
    @ivar deliveries: how many times it has been handed out to its group, this time
        included (1 for an entry the group has never seen).  The broker uses it to
        tell an entry handed out alone (see L{ISOLATE_AFTER}) from a batch.
    """

    offset: int
    topic: str
    content: str
    deliveries: int = 1


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

    An entry whose checksum did not match when it was read is never delivered: it
    is recorded here for every group that still needed it, with C{deliveries} 0 and
    C{damaged} set (its C{topic} and C{content} are what the store read, not what
    was sent).  A dead letter that fails its own checksum is also C{damaged}.
    """

    group: str
    offset: int
    topic: str
    content: str
    deliveries: int
    at: float
    damaged: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """
    What a store still holds of one topic (or pattern) after an offset: the answer
    to L{IMessageStore.history}.

    @ivar latest: the highest offset stored (0 when nothing ever was).
    @ivar entries: the matching entries above the offset asked for, in order, at
        most the limit asked for.
    @ivar complete: whether C{entries} are all of them: nothing above the offset
        was dropped before it was asked for (by retention, or as older than what
        is kept for history), and there were no more than the limit.
    """

    epoch: str
    latest: int
    entries: list[Entry]
    complete: bool


class IMessageStore(Interface):
    """
    The queue storage that msgqueue uses.
    """

    epoch = Attribute(
        "A string made when the store was created and kept with it. Offsets are only "
        "comparable within one epoch: a consumer that sees a new epoch starts over."
    )
    retained = Attribute("How many entries the store holds now (an int).")
    backlog = Attribute(
        "How many of them some group still needs (an int): what msgqueue's flow control counts, "
        "without the entries kept only for history (see historyKeep)."
    )
    retainedBytes = Attribute(
        "The size of the topics and contents the store holds (an int), as --retention-max-bytes "
        "measures it (characters for SQLite and memory, UTF-8 bytes for Redis)."
    )
    historyKeep = Attribute(
        "How many of the newest entries are kept after every group has them, so that clients can "
        "recover what they missed (L{history}); 0 keeps none. Retention limits still apply."
    )
    damagedEntries = Attribute(
        "How many stored entries failed their checksum when read since the store was "
        "opened (an int; always 0 for a store that keeps no checksums).  Such an entry "
        "is never handed out: it is treated as acknowledged by every group and "
        "recorded in the dead letters (see L{DeadLetter})."
    )

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
        L{release} or L{releaseExpired} come first, then entries the group has never
        seen, in offset order.  Every returned entry is pending for C{consumer} until
        L{ack}ed, and carries its delivery count.

        Poison isolation: when the oldest given-back entry has already been delivered
        L{ISOLATE_AFTER} times, it is handed out alone (a list of one) and only to a
        consumer that holds nothing else pending in the group; for any other
        consumer the read is empty.  A given-back entry that has already been
        delivered alone C{maxDeliver} times moves to the group's dead letters instead
        (see L{deadLetters}), so only an entry that failed by itself is ever
        dead-lettered, never a neighbour that shared its window.  Dead letters do not
        count against C{count}.

        Fewer than C{count} entries means the group has nothing more for this
        consumer now: either nothing at all, or (a list of one entry delivered more
        than L{ISOLATE_AFTER} times) an entry that must go alone, or (an empty list
        for a consumer that holds pending entries) an entry waiting for a consumer
        that holds nothing.
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
        ago and still unacknowledged; fire with their C{(group, offset)}s.  They are
        handed out again like released entries, isolation included.
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

    def trimGroupBacklog(maxBacklog: int, active: set[str]) -> Deferred[dict[str, int]]:
        """
        For each group other than C{active} (those with a consumer connected) whose
        backlog (entries it has not acknowledged: pending, given back, or never read)
        exceeds C{maxBacklog}, drop its oldest ones down to C{maxBacklog}, as if it
        had acknowledged them; fire with how many each such group lost.  An absent
        group then cannot hold every producer hostage.
        """

    def expireGroups(idle: float, active: set[str]) -> Deferred[list[str]]:
        """
        Remove the groups, other than C{active}, that have not read or acknowledged
        anything for C{idle} seconds; fire with their names.
        """

    def groupLags() -> Deferred[dict[str, int]]:
        """
        Fire with, for each group, how many stored entries it has never been handed
        (its lag, for the metrics).
        """

    def history(pattern: str, after: int, limit: int) -> Deferred[History]:
        """
        Fire with the entries whose topic matches C{pattern} (a topic, or a
        wildcard pattern, see L{wsqueue.topics}) with offsets above C{after}, in
        order, up to C{limit} of them, and whether that is all of them (see
        L{History}).  Read through an index of topics, never by reading the whole log.
        """

    def close() -> Deferred[None]:
        """
        Finish what is queued and release what the store holds open; fire once that
        is done (for a durable store: everything is in its main file).
        """
