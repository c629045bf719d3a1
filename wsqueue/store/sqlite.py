# -*- test-case-name: tests.test_store -*-
"""
A durable L{IMessageStore} in SQLite: what msgqueue uses by default.

All SQL runs on one dedicated writer thread, never on the reactor.  Operations queue
up while a transaction commits, and the next transaction takes them all (group
commit), so a burst of appends costs one fsync.  A Deferred fires only after its
transaction has committed with C{synchronous=FULL} in WAL mode: an acknowledged
message survives a crash of the process or the machine.  Transactions that only
move group positions run with C{synchronous=NORMAL} (see L{_Database.setDurability}).

Consumer-group positions and pending entries are stored too, so a restart resumes
every group where it left off; entries that were pending for consumers of the old
process go back to their groups.

What a damaged store does:

  - the file is checked with C{PRAGMA quick_check} when it is opened, and a
    structurally damaged file is refused with one line, never silently used;
  - every entry carries a CRC-32 of its topic and content, checked whenever it is
    read: an altered entry is never handed out, but logged, counted
    (C{damagedEntries}), treated as acknowledged by every group and recorded in the
    dead letters with C{deliveries} 0 (see L{wsqueue.store.base.DeadLetter});
  - after each commit that stored messages, the highest stored offset and the epoch
    go to a side file, C{PATH.committed}; a store that ends below it (its
    write-ahead log was lost or cut short) or has another epoch is refused at open,
    naming what is missing and how to accept the loss (see L{checkCommitted});
  - a clean close checkpoints the write-ahead log into the main file, so that the
    main file alone holds everything (see L{SQLiteStore.close}).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsqueue.store.base import ISOLATE_AFTER, DeadLetter, Entry, History, IMessageStore, PendingEntry
from wsqueue.topics import isPattern, matches

SCHEMA_VERSION = "2"
"""1: the first release; 2: checksums (C{crc}) and deliveries alone (C{pending.alone})."""
MAX_BATCH_OPERATIONS = 1000
"""The most queued operations one transaction takes."""
COMMITTED_SUFFIX = ".committed"
RECORD_INTERVAL = 0.1
"""Seconds between two writes of the side file while appends keep coming."""
"""The side file next to the store that records the highest committed offset."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    content TEXT NOT NULL,
    stored REAL NOT NULL,
    crc INTEGER
);
-- History reads by topic (IMessageStore.history): a range of the index, not a scan of the log.
CREATE INDEX IF NOT EXISTS entries_by_topic ON entries (topic, offset);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, next_offset INTEGER NOT NULL, last_active REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    grp TEXT NOT NULL,
    offset INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    delivered REAL NOT NULL,
    alone INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS producers (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    grp TEXT NOT NULL,
    offset INTEGER NOT NULL,
    topic TEXT NOT NULL,
    content TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    at REAL NOT NULL,
    crc INTEGER
);
"""
_MIGRATIONS = [
    # (table, column, definition): columns added since schema 1; a NULL crc is not verified.
    ("entries", "crc", "INTEGER"),
    ("dead_letters", "crc", "INTEGER"),
    ("pending", "alone", "INTEGER NOT NULL DEFAULT 0"),
]
PRODUCER_EXPIRY = 7 * 24 * 3600
"""Producers not heard from for this long are forgotten (their resends are long over)."""


class StoreError(Exception):
    """
    The store cannot be opened or used; the message is one line naming the file.
    """


def checksum(topic: bytes, content: bytes) -> int:
    """
    The CRC-32 kept with an entry: over its topic and content as stored (UTF-8),
    with a separator so that moving bytes from one to the other changes it too.
    (The hot loops below compute the same with the topic's part cached.)
    """
    return zlib.crc32(content, zlib.crc32(topic + b"\x00"))


class _TopicChecksums(dict):
    """
    The checksum of C{topic + separator}, per topic (as bytes, or as a str to be
    encoded): the part of an entry's checksum that its topic contributes, computed
    once per topic in a batch.
    """

    def __missing__(self, topic: bytes | str) -> int:
        value = self[topic] = zlib.crc32((topic.encode("utf-8") if isinstance(topic, str) else topic) + b"\x00")
        return value


def _decoded(topic: bytes, content: bytes, crc: int | None) -> tuple[str, str] | None:
    """
    The topic and content of a row read as bytes, or L{None} if they fail their
    checksum or are not UTF-8 (a flipped bit can make them either).
    """
    if crc is not None and checksum(topic, content) != crc:
        return None
    try:
        return topic.decode("utf-8"), content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def readDeadLetters(db: sqlite3.Connection, group: str | None = None) -> list[DeadLetter]:
    """
    The dead letters in a store file (of one group, or all), oldest first, each
    checked against its checksum.  Also used by C{wsqueue-deadletters} on a
    read-only connection, so it reads a store of schema 1 as well.
    """
    crc = "crc" if "crc" in _columns(db, "dead_letters") else "NULL"
    query = (
        f"SELECT grp, offset, CAST(topic AS BLOB), CAST(content AS BLOB), deliveries, at, {crc} FROM dead_letters"
    )
    rows = (
        db.execute(query + " WHERE grp = ? ORDER BY rowid", (group,))
        if group is not None
        else db.execute(query + " ORDER BY rowid")
    )
    letters = []
    for grp, offset, topic, content, deliveries, at, stored in rows:
        decoded = _decoded(topic, content, stored)
        if decoded is None:
            # Shown for what it is: what the store read, marked damaged.
            letters.append(DeadLetter(grp, offset, topic.decode("utf-8", "replace"),
                                      content.decode("utf-8", "replace"), deliveries, at, True))
        else:
            letters.append(DeadLetter(grp, offset, *decoded, deliveries, at, deliveries == 0))
    return letters


def checkCommitted(sidePath: str, path: str, epoch: str | None, highest: int) -> None:
    """
    Refuse a store that holds less than its side file says was committed.

    SQLite keeps recent transactions in the C{-wal} file; a write-ahead log that a
    failing disk or a bad copy cut short opens without complaint, holding only the
    transactions before the cut.  The side file remembers the highest offset ever
    committed and the epoch, so such a store (or a store file replaced by another)
    is refused with one line instead of serving a fraction of what was acknowledged.
    An empty side file (one created just before a power loss) says nothing.
    """
    try:
        with open(sidePath, encoding="ascii", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return
    if not text.strip():
        return
    accept = f"to start anyway and accept the loss, delete {sidePath}"
    parts = text.split()
    if len(parts) != 2 or not parts[1].isdigit():
        raise StoreError(f"{sidePath} (the highest committed offset of store {path}) is unreadable; {accept}")
    sideEpoch, sideOffset = parts[0], int(parts[1])
    if epoch is None:
        raise StoreError(
            f"store {path} is empty or new, but {sidePath} says offsets up to {sideOffset} were committed "
            f"under epoch {sideEpoch}: the store file or its write-ahead log was lost; {accept}"
        )
    if epoch != sideEpoch:
        raise StoreError(
            f"store {path} has epoch {epoch}, but {sidePath} says offsets up to {sideOffset} were committed "
            f"under epoch {sideEpoch}: the store file was replaced or lost its write-ahead log; {accept}"
        )
    if highest < sideOffset:
        raise StoreError(
            f"offsets up to {sideOffset} were committed to store {path} but it ends at {highest}: its "
            f"write-ahead log ({path}-wal) was lost or cut short; {accept}"
        )


class _Database:
    """
    The SQL of the store.  Every method runs on the one thread that owns the connection.

    @ivar first: the lowest offset a new group starts at.
    @ivar next: the offset the next appended entry gets.
    @ivar needed: the lowest offset a group still needs (entries below it are kept
        only for history, at most C{historyKeep} of the newest).
    @ivar count: how many entries the C{entries} table holds.
    @ivar damaged: offsets found damaged by the current transaction (reported, and
        counted, only once it commits).
    """

    def __init__(self, path: str, now: Callable[[], float] = time.time, recordInterval: float = RECORD_INTERVAL) -> None:
        self.path = path
        self.sidePath = path + COMMITTED_SUFFIX
        self.now = now
        self.damaged: list[int] = []
        self.recorded: int | None = None
        self.needsReload = False
        self.sideFileProblem: str | None = None
        self._sideFile: int | None = None
        self._recordedAt = 0.0
        self.recordInterval = recordInterval
        self.historyKeep = 0
        self.db: sqlite3.Connection
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._check()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._full = True
            checkCommitted(self.sidePath, path, *self._storedState())
            self._migrate()
            self.epoch = self._epoch()
            # Entries pending for consumers of a previous process go back to their groups.
            self.db.execute("UPDATE pending SET consumer = '' WHERE consumer != ''")
            self.db.execute("DELETE FROM producers WHERE updated < ?", (now() - PRODUCER_EXPIRY,))
            self.reload()
            self._openSideFile()
        except sqlite3.DatabaseError as e:
            self._abandon()
            raise StoreError(f"store {path} is unusable: {e}") from None
        except OSError as e:
            self._abandon()
            raise StoreError(f"cannot open store {path}: {e.strerror}") from None
        except StoreError:
            self._abandon()
            raise

    def _abandon(self) -> None:
        # The connection exists unless connecting itself failed.
        db = self.__dict__.get("db")
        if db is not None:
            db.close()
        if self._sideFile is not None:
            os.close(self._sideFile)

    def _storedState(self) -> tuple[str | None, int]:
        """
        The epoch and the highest offset the file holds, before anything is created.
        """
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        epoch = None
        if "meta" in tables:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            epoch = row[0] if row is not None else None
        highest = 0
        if "entries" in tables:
            highest = self.db.execute("SELECT COALESCE(MAX(offset), 0) FROM entries").fetchone()[0]
        if "sqlite_sequence" in tables:
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
            highest = max(highest, row[0] if row is not None else 0)
        return epoch, highest

    def _migrate(self) -> None:
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and row[0].isdigit() and int(row[0]) > int(SCHEMA_VERSION):
            raise StoreError(
                f"store {self.path} was written by a newer wsqueue (schema {row[0]}; this one knows {SCHEMA_VERSION})"
            )
        for table, column, definition in _MIGRATIONS:
            if column not in _columns(self.db, table):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        if row is not None and row[0] != SCHEMA_VERSION:
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))

    def reload(self) -> None:
        """
        Read every figure kept in memory again from the database: at open, and after
        a transaction (or one operation's savepoint) was rolled back, so that they
        never count what the database does not hold.
        """
        first, last, count, size = self.db.execute(
            "SELECT MIN(offset), MAX(offset), COUNT(*), COALESCE(SUM(LENGTH(topic) + LENGTH(content)), 0) FROM entries"
        ).fetchone()
        self.bytes = size
        self.first = first if first is not None else self._nextOffset()
        self.next = (last + 1) if last is not None else self.first
        self.needed = self.first
        self.count = count
        self._full = self.db.execute("PRAGMA synchronous").fetchone()[0] == 2
        self.needsReload = False

    def _check(self) -> None:
        result = self.db.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            problems = "; ".join(row[0] for row in result[:3])
            raise sqlite3.DatabaseError(f"quick_check failed ({problems})")

    def _epoch(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is not None:
            return row[0]
        epoch = uuid.uuid4().hex
        self.db.execute("INSERT INTO meta VALUES ('epoch', ?), ('schema', ?)", (epoch, SCHEMA_VERSION))
        return epoch

    def _nextOffset(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        return (row[0] + 1) if row is not None else 1

    @property
    def retained(self) -> int:
        return self.count

    @property
    def backlog(self) -> int:
        return max(0, self.next - max(self.needed, self.first))

    # -- the committed-offset side file ---------------------------------------------

    def _openSideFile(self) -> None:
        self._sideFile = os.open(self.sidePath, os.O_RDWR | os.O_CREAT, 0o644)
        self.recordCommitted()
        os.ftruncate(self._sideFile, len(self._sideLine()))

    def _sideLine(self) -> bytes:
        # Fixed width, so that each update is one write over the last, never a truncation.
        return f"{self.epoch} {self.next - 1:020d}\n".encode("ascii")

    @property
    def recordPending(self) -> bool:
        """
        Whether a committed offset is not in the side file yet.
        """
        return self._sideFile is not None and self.recorded != self.next - 1

    def recordCommitted(self, force: bool = True) -> None:
        """
        After a commit that stored messages: write the highest offset to the side file.

        One C{pwrite}, without fsync.  That is safe because it always follows the
        commit's own fsync: whatever the side file says is already durable in the
        store, so a power loss can only leave it saying less (a weaker check at the
        next start), never more (a false refusal).

        Unless C{force}d, at most once per C{recordInterval} (L{RECORD_INTERVAL}): a dirty page in
        another file makes the file system write it with the next commit's fsync
        (ext4 orders data before its journal), which measurably added to every
        message's latency when it was written at each commit.  The writer thread
        writes what is left once it has been idle for that long (L{SQLiteStore}),
        and on close, so the side file lags at most a tenth of a second of commits:
        a cut log that lost more than that is still refused.
        """
        if self._sideFile is None or self.recorded == self.next - 1:
            return
        now = time.monotonic()
        if not force and now - self._recordedAt < self.recordInterval:
            return
        self._recordedAt = now
        try:
            os.pwrite(self._sideFile, self._sideLine(), 0)
        except OSError as e:
            # The commit stands; only the check at the next start is weaker.
            self.sideFileProblem = f"cannot write {self.sidePath}: {e.strerror}"
            return
        self.recorded = self.next - 1

    def setDurability(self, full: bool) -> None:
        """
        C{synchronous=FULL} (fsync at every commit) for a transaction that stores
        messages, whose acknowledgement promises they survive a power loss;
        C{NORMAL} otherwise.  In WAL mode NORMAL is still atomic and consistent: a
        power loss can only undo the last group positions and acknowledgements,
        which means redelivering a few messages (at least once), never losing one.
        """
        if full != self._full:
            self.db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    # -- operations -------------------------------------------------------------

    def append(
        self, messages: Sequence[tuple[str, str]], producer: str | None, seqs: Sequence[int] | None
    ) -> list[int | None]:
        now = self.now()
        keep = [True] * len(messages)
        if producer is not None and seqs:
            row = self.db.execute("SELECT last_seq FROM producers WHERE name = ?", (producer,)).fetchone()
            last = row[0] if row is not None else 0
            keep = [seq > last for seq in seqs]
            self.db.execute(
                "INSERT INTO producers VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "last_seq = MAX(last_seq, excluded.last_seq), updated = excluded.updated",
                (producer, max(seqs), now),
            )
        topics = _TopicChecksums()
        crc32 = zlib.crc32
        # What SQLite stores for a str is its UTF-8, so the checksum is over that (a
        # lone surrogate fails here, as it would in SQLite).
        stored = [
            (topic, content, now, crc32(content.encode("utf-8"), topics[topic]))
            for (topic, content), new in zip(messages, keep)
            if new
        ]
        self.db.executemany("INSERT INTO entries (topic, content, stored, crc) VALUES (?, ?, ?, ?)", stored)
        offsets: list[int | None] = []
        for new in keep:
            offsets.append(self.next if new else None)
            self.next += new
        self.count += len(stored)
        self.bytes += sum(len(topic) + len(content) for topic, content, _, _ in stored)
        return offsets

    def _group(self, group: str) -> int:
        """
        The group's position, creating the group at the oldest entry; marks it active.
        """
        now = self.now()
        row = self.db.execute("SELECT next_offset FROM groups WHERE name = ?", (group,)).fetchone()
        if row is not None:
            self.db.execute("UPDATE groups SET last_active = ? WHERE name = ?", (now, group))
            return row[0]
        self.db.execute("INSERT INTO groups VALUES (?, ?, ?)", (group, self.first, now))
        return self.first

    def readGroup(self, group: str, consumer: str, count: int, maxDeliver: int | None) -> list[Entry]:
        nextOffset = self._group(group)
        now = self.now()
        released = self._released(group, count)
        while released and released[0][1] >= ISOLATE_AFTER:
            offset, deliveries, alone = released[0]
            if maxDeliver is not None and alone >= maxDeliver:
                self._deadLetter(group, [offset], now)
                released = self._released(group, count)
                continue
            # The oldest given-back entry came back more than once: it goes alone, to
            # a consumer holding nothing else, so that only it is blamed if it fails.
            if self.db.execute(
                "SELECT 1 FROM pending WHERE grp = ? AND consumer = ? LIMIT 1", (group, consumer)
            ).fetchone():
                return []
            self.db.execute(
                "UPDATE pending SET consumer = ?, deliveries = deliveries + 1, alone = alone + 1, delivered = ? "
                "WHERE grp = ? AND offset = ?",
                (consumer, now, group, offset),
            )
            handedOut = self._verified({offset: deliveries + 1})
            if handedOut:
                return handedOut
            # It was damaged and is gone: look again.
            released = self._released(group, count)
        result = self._redeliver(group, consumer, count, maxDeliver, now, released)
        while len(result) < count:
            fresh = list(
                self.db.execute(
                    "SELECT offset, CAST(topic AS BLOB), CAST(content AS BLOB), crc FROM entries "
                    "WHERE offset >= ? ORDER BY offset LIMIT ?",
                    (nextOffset, count - len(result)),
                )
            )
            if not fresh:
                break
            # Checked before the group moves on, so that a damaged entry is recorded for it too.
            good = self._checked(fresh, {})
            nextOffset = fresh[-1][0] + 1
            self.db.execute("UPDATE groups SET next_offset = ? WHERE name = ?", (nextOffset, group))
            self.db.executemany(
                "INSERT INTO pending (grp, offset, consumer, deliveries, delivered) VALUES (?, ?, ?, 1, ?)",
                [(group, entry.offset, consumer, now) for entry in good],
            )
            result.extend(good)
        return result

    def _released(self, group: str, count: int) -> list[tuple[int, int, int]]:
        """
        Up to C{count} of the group's given-back entries, oldest first: their offset,
        deliveries and deliveries alone.
        """
        return list(
            self.db.execute(
                "SELECT offset, deliveries, alone FROM pending WHERE grp = ? AND consumer = '' ORDER BY offset LIMIT ?",
                (group, count),
            )
        )

    def _redeliver(
        self, group: str, consumer: str, count: int, maxDeliver: int | None, now: float,
        released: list[tuple[int, int, int]],
    ) -> list[Entry]:
        """
        Hand out given-back entries as one batch (the oldest was delivered only once),
        dead-lettering those delivered alone C{maxDeliver} times; C{released} is the
        first look at them (see L{_released}), taken by the caller.
        """
        result: list[Entry] = []
        first: list[tuple[int, int, int]] | None = released
        while len(result) < count:
            if first is not None:
                batch, first = first, None
            else:
                batch = self._released(group, count - len(result))
            if not batch:
                break
            spent = [offset for offset, _, alone in batch if maxDeliver is not None and alone >= maxDeliver]
            if spent:
                self._deadLetter(group, spent, now)
            taken = {offset: deliveries + 1 for offset, deliveries, _ in batch if offset not in spent}
            self.db.executemany(
                "UPDATE pending SET consumer = ?, deliveries = deliveries + 1, delivered = ? WHERE grp = ? AND offset = ?",
                [(consumer, now, group, offset) for offset in taken],
            )
            result.extend(self._verified(taken))
        return result

    def _verified(self, deliveries: dict[int, int]) -> list[Entry]:
        """
        The entries at the offsets of C{deliveries} (offset to delivery count), in
        offset order, without those that fail their checksum.
        """
        if not deliveries:
            return []
        marks = ",".join("?" * len(deliveries))
        rows = list(
            self.db.execute(
                f"SELECT offset, CAST(topic AS BLOB), CAST(content AS BLOB), crc FROM entries WHERE offset IN ({marks}) "
                "ORDER BY offset",
                list(deliveries),
            )
        )
        return self._checked(rows, deliveries)

    def _checked(self, rows: list[tuple[int, bytes, bytes, int | None]], deliveries: dict[int, int]) -> list[Entry]:
        """
        The entries of C{rows} (read as bytes) that pass their checksum and decode;
        the others are taken out of the way (see L{_removeDamaged}).
        """
        topics = _TopicChecksums()
        crc32 = zlib.crc32
        # The fast way first (this runs once per message handed out), the same test
        # as _decoded; one entry at a time only if something is damaged.
        try:
            good = [
                Entry(offset, topic.decode("utf-8"), content.decode("utf-8"), deliveries.get(offset, 1))
                for offset, topic, content, crc in rows
                if crc is None or crc32(content, topics[topic]) == crc
            ]
            if len(good) == len(rows):
                return good
        except UnicodeDecodeError:
            pass
        good = []
        for offset, topic, content, crc in rows:
            decoded = _decoded(topic, content, crc)
            if decoded is None:
                self._removeDamaged(offset, topic, content, crc)
            else:
                good.append(Entry(offset, *decoded, deliveries.get(offset, 1)))
        return good

    def _removeDamaged(self, offset: int, topic: bytes, content: bytes, crc: int | None) -> None:
        """
        Take an entry that failed its checksum out of the way of every group: a dead
        letter (deliveries 0) for each group that still needed it, no longer pending
        anywhere, and gone from the entries.
        """
        now = self.now()
        self.db.execute(
            "INSERT INTO dead_letters (grp, offset, topic, content, deliveries, at, crc) "
            "SELECT g.name, ?, ?, ?, 0, ?, ? FROM groups AS g WHERE g.next_offset <= ? "
            "OR EXISTS (SELECT 1 FROM pending AS p WHERE p.grp = g.name AND p.offset = ?)",
            (offset, topic, content, now, crc, offset, offset),
        )
        self.db.execute("DELETE FROM pending WHERE offset = ?", (offset,))
        row = self.db.execute("SELECT LENGTH(topic) + LENGTH(content) FROM entries WHERE offset = ?", (offset,)).fetchone()
        self.bytes -= row[0] if row is not None and row[0] is not None else 0
        self.count -= self.db.execute("DELETE FROM entries WHERE offset = ?", (offset,)).rowcount
        self.damaged.append(offset)
        self._trim()

    def _deadLetter(self, group: str, offsets: list[int], now: float) -> None:
        marks = ",".join("?" * len(offsets))
        self.db.execute(
            "INSERT INTO dead_letters (grp, offset, topic, content, deliveries, at, crc) "
            "SELECT p.grp, p.offset, e.topic, e.content, p.deliveries, ?, e.crc "
            f"FROM pending AS p JOIN entries AS e ON e.offset = p.offset WHERE p.grp = ? AND p.offset IN ({marks})",
            (now, group, *offsets),
        )
        self.db.execute(f"DELETE FROM pending WHERE grp = ? AND offset IN ({marks})", (group, *offsets))
        self._trim()

    def ack(self, group: str, offsets: Sequence[int]) -> int:
        self.db.execute("UPDATE groups SET last_active = ? WHERE name = ?", (self.now(), group))
        cursor = self.db.executemany(
            "DELETE FROM pending WHERE grp = ? AND offset = ? AND consumer != ''", [(group, o) for o in offsets]
        )
        acked = cursor.rowcount
        self._trim()
        return acked

    def _trim(self) -> None:
        # The lowest offset any group still needs: its oldest pending entry, else its position.
        row = self.db.execute(
            "SELECT MIN(needed) FROM (SELECT MIN(COALESCE((SELECT MIN(offset) FROM pending WHERE grp = g.name), "
            "g.next_offset), g.next_offset) AS needed FROM groups AS g)"
        ).fetchone()
        lowest = row[0]
        self.needed = self.first if lowest is None else lowest
        # With no group yet, everything is kept for the first one; else what the
        # groups need, and the newest historyKeep entries for history reads.
        if lowest is None:
            return
        cut = min(lowest, self.next - self.historyKeep)
        if cut <= self.first:
            return
        self._dropBelow(cut)

    def _dropBelow(self, cut: int) -> None:
        (size,) = self.db.execute(
            "SELECT COALESCE(SUM(LENGTH(topic) + LENGTH(content)), 0) FROM entries WHERE offset < ?", (cut,)
        ).fetchone()
        self.bytes -= size
        self.count -= self.db.execute("DELETE FROM entries WHERE offset < ?", (cut,)).rowcount
        self.first = min(cut, self.next)

    def pending(self, group: str) -> list[PendingEntry]:
        return [
            PendingEntry(offset, consumer, deliveries)
            for offset, consumer, deliveries in self.db.execute(
                "SELECT offset, consumer, deliveries FROM pending WHERE grp = ? AND consumer != '' ORDER BY offset",
                (group,),
            )
        ]

    def release(self, group: str, consumer: str) -> int:
        if not consumer:
            return 0
        cursor = self.db.execute("UPDATE pending SET consumer = '' WHERE grp = ? AND consumer = ?", (group, consumer))
        return cursor.rowcount

    def releaseExpired(self, ackWait: float) -> list[tuple[str, int]]:
        deadline = self.now() - ackWait
        expired = list(
            self.db.execute("SELECT grp, offset FROM pending WHERE consumer != '' AND delivered < ?", (deadline,))
        )
        self.db.execute("UPDATE pending SET consumer = '' WHERE consumer != '' AND delivered < ?", (deadline,))
        return expired

    def deadLetters(self, group: str | None) -> list[DeadLetter]:
        return readDeadLetters(self.db, group)

    def groupLags(self) -> dict[str, int]:
        return {
            name: max(0, self.next - max(nextOffset, self.first))
            for name, nextOffset in self.db.execute("SELECT name, next_offset FROM groups")
        }

    def history(self, pattern: str, after: int, limit: int) -> History:
        latest = self.next - 1
        complete = after + 1 >= self.first or after >= latest
        if not isPattern(pattern):
            offsets = [offset for (offset,) in self.db.execute(
                "SELECT offset FROM entries WHERE topic = ? AND offset > ? ORDER BY offset LIMIT ?",
                (pattern, after, limit + 1),
            )]
        else:
            # The index's range of the topics that start with the pattern's literal
            # tokens (all of it for a pattern that starts with a wildcard).
            literal = pattern.split("*")[0].split(">")[0]
            rows = self.db.execute(
                "SELECT offset, topic FROM entries WHERE topic >= ? AND topic < ? AND offset > ?",
                (literal, literal + "\U0010ffff", after),
            )
            offsets = sorted(offset for offset, topic in rows if matches(pattern, topic))[:limit + 1]
        if len(offsets) > limit:
            return History(self.epoch, latest, [], False)
        entries = self._verified(dict.fromkeys(offsets, 1))
        # An entry that failed its checksum is a gap: never presented as whole.
        return History(self.epoch, latest, entries, complete and len(entries) == len(offsets))

    def applyRetention(self, maxMessages: int | None, maxBytes: int | None, maxAge: float | None) -> dict[str, int]:
        cut = self.first
        if maxMessages is not None and self.count > maxMessages:
            row = self.db.execute(
                "SELECT offset FROM entries ORDER BY offset LIMIT 1 OFFSET ?", (self.count - maxMessages,)
            ).fetchone()
            cut = max(cut, row[0] if row is not None else self.next)
        if maxAge is not None:
            row = self.db.execute("SELECT MIN(offset) FROM entries WHERE stored >= ?", (self.now() - maxAge,)).fetchone()
            cut = max(cut, row[0] if row[0] is not None else self.next)
        if maxBytes is not None:
            # The newest entries that fit in maxBytes stay.
            total = 0
            keepFrom = self.next
            for offset, size in self.db.execute(
                "SELECT offset, LENGTH(topic) + LENGTH(content) FROM entries WHERE offset >= ? ORDER BY offset DESC",
                (cut,),
            ):
                total += size
                if total > maxBytes:
                    break
                keepFrom = offset
            cut = max(cut, keepFrom)
        if cut <= self.first:
            return {}
        lost = {}
        for name, nextOffset in list(self.db.execute("SELECT name, next_offset FROM groups")):
            unseen = self.db.execute(
                "SELECT COUNT(*) FROM entries WHERE offset >= ? AND offset < ?", (nextOffset, cut)
            ).fetchone()[0]
            pending = self.db.execute(
                "SELECT COUNT(*) FROM pending WHERE grp = ? AND offset < ?", (name, cut)
            ).fetchone()[0]
            if unseen + pending:
                lost[name] = unseen + pending
        self.db.execute("DELETE FROM pending WHERE offset < ?", (cut,))
        self.db.execute("UPDATE groups SET next_offset = ? WHERE next_offset < ?", (cut, cut))
        self._dropBelow(cut)
        return lost

    def trimGroupBacklog(self, maxBacklog: int, active: set[str]) -> dict[str, int]:
        lost = {}
        for name, nextOffset in list(self.db.execute("SELECT name, next_offset FROM groups")):
            if name in active:
                continue
            pending = self.db.execute("SELECT COUNT(*) FROM pending WHERE grp = ?", (name,)).fetchone()[0]
            # Offsets are contiguous but for damaged entries taken out: close enough, and cheap.
            unseen = max(0, self.next - max(nextOffset, self.first))
            excess = pending + unseen - maxBacklog
            if excess <= 0:
                continue
            lost[name] = excess
            # The oldest first: pending entries are all older than the unseen ones.
            fromPending = min(excess, pending)
            self.db.execute(
                "DELETE FROM pending WHERE grp = ? AND offset IN "
                "(SELECT offset FROM pending WHERE grp = ? ORDER BY offset LIMIT ?)",
                (name, name, fromPending),
            )
            if excess > fromPending:
                row = self.db.execute(
                    "SELECT offset FROM entries WHERE offset >= ? ORDER BY offset LIMIT 1 OFFSET ?",
                    (nextOffset, excess - fromPending),
                ).fetchone()
                self.db.execute(
                    "UPDATE groups SET next_offset = ? WHERE name = ?", (row[0] if row else self.next, name)
                )
        if lost:
            self._trim()
        return lost

    def expireGroups(self, idle: float, active: set[str]) -> list[str]:
        deadline = self.now() - idle
        expired = [
            name
            for (name,) in self.db.execute("SELECT name FROM groups WHERE last_active < ?", (deadline,))
            if name not in active
        ]
        for name in expired:
            self.db.execute("DELETE FROM pending WHERE grp = ?", (name,))
            self.db.execute("DELETE FROM groups WHERE name = ?", (name,))
        if expired:
            self._trim()
        return expired

    def close(self) -> str | None:
        """
        Checkpoint the write-ahead log into the main file and close; return why the
        checkpoint could not finish (a reader held it back), or L{None}.  Closing
        never fails: what is committed is durable in the log either way.
        """
        problem = None
        self.recordCommitted()
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                problem = "another connection was reading it"
        except sqlite3.Error as e:
            problem = str(e)
        self.db.close()
        if self._sideFile is not None:
            os.close(self._sideFile)
            self._sideFile = None
        return problem


class _Operation:
    __slots__ = ("args", "deferred", "failure", "name", "result")

    def __init__(self, name: str, args: tuple) -> None:
        self.name = name
        self.args = args
        self.deferred: Deferred = Deferred()
        self.result: Any = None
        self.failure: Failure | None = None


class _TransactionLost(Exception):
    """
    SQLite rolled the whole transaction back by itself (a full disk, an I/O error).
    """


def runBatch(database: _Database, operations: list[_Operation]) -> list[int]:
    """
    Run C{operations} in one transaction, each under its own savepoint so that one
    failing operation does not undo the others; commit once.  If the commit fails,
    or SQLite rolled the whole transaction back by itself (C{SQLITE_FULL},
    C{SQLITE_IOERR}: then there is no savepoint left to roll back to), every
    operation in the batch fails.  After any rollback every figure kept in memory is
    read again from the database.  Return the offsets of the entries found damaged
    by operations that committed.
    """
    db = database.db
    database.damaged = []
    lost: Failure | None = None
    try:
        if database.needsReload:
            database.reload()
        appends = any(operation.name == "append" for operation in operations)
        database.setDurability(appends)
        db.execute("BEGIN IMMEDIATE")
        for number, operation in enumerate(operations):
            db.execute(f"SAVEPOINT op{number}")
            damagedBefore = len(database.damaged)
            try:
                operation.result = getattr(database, operation.name)(*operation.args)
            except Exception:  # noqa: BLE001 -- reported to that operation's caller
                operation.failure = Failure()
                if not db.in_transaction:
                    lost = operation.failure
                    raise _TransactionLost() from None
                db.execute(f"ROLLBACK TO op{number}")
                del database.damaged[damagedBefore:]
                database.reload()
            db.execute(f"RELEASE op{number}")
        db.execute("COMMIT")
    except Exception:  # noqa: BLE001 -- the whole batch failed to commit
        # The operation that lost the transaction carries the cause; the others share it.
        cause = lost if lost is not None else Failure()
        for operation in operations:
            if lost is None or operation.failure is None:
                operation.failure = cause
        database.damaged = []
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
            database.reload()
        except sqlite3.Error:
            # Still failing: read the figures again before the next transaction.
            database.needsReload = True
        return []
    if appends:
        database.recordCommitted(force=False)
    return database.damaged


@implementer(IMessageStore)
class SQLiteStore:
    """
    The durable store.  C{retained}, C{backlog} and C{damagedEntries} are kept up to date on the
    reactor's side.

    @param runInline: run each operation at once in the calling thread instead of on
        the writer thread (for tests that drive the store synchronously).
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        callFromThread: Callable | None = None,
        runInline: bool = False,
        now: Callable[[], float] = time.time,
        recordInterval: float = RECORD_INTERVAL,
        historyKeep: int = 0,
    ) -> None:
        self.path = path
        self._now = now
        self._recordInterval = recordInterval
        self._inline = runInline
        self._callFromThread = callFromThread
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._closed: Deferred[None] = Deferred()
        if runInline:
            self._database = _Database(path, now, recordInterval)
        else:
            self._database = self._openOnThread(path)
        self.epoch = self._database.epoch
        self.retained = self._database.retained
        self.backlog = self._database.backlog
        self.retainedBytes = self._database.bytes
        self.historyKeep = historyKeep
        self._database.historyKeep = historyKeep
        self.damagedEntries = 0
        self.closed = False
        self._sideFileWarned = False

    def _openOnThread(self, path: str) -> _Database:
        opened: queue.SimpleQueue = queue.SimpleQueue()

        def run() -> None:
            try:
                database = _Database(path, self._now, self._recordInterval)
            except StoreError as e:
                opened.put(e)
                return
            opened.put(database)
            self._serve(database)

        self._thread = threading.Thread(target=run, name=f"wsqueue-store {path}", daemon=True)
        self._thread.start()
        result = opened.get()
        if isinstance(result, StoreError):
            raise result
        return result

    def _serve(self, database: _Database) -> None:
        callFromThread = self._callFromThread
        assert callFromThread is not None, "a threaded store needs callFromThread"
        while True:
            try:
                # Idle with a committed offset not yet in the side file: write it.
                operation = self._queue.get(timeout=database.recordInterval if database.recordPending else None)
            except queue.Empty:
                database.recordCommitted()
                continue
            if operation is None:
                problem: str | None = "closing failed"
                try:
                    problem = database.close()
                finally:
                    callFromThread(self._closedOnThread, problem)
                return
            batch = [operation]
            while len(batch) < MAX_BATCH_OPERATIONS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            damaged = runBatch(database, batch)
            figures = (database.retained, database.backlog, database.bytes)
            callFromThread(self._finished, batch, figures, damaged, database.sideFileProblem)

    def _finished(
        self, batch: list[_Operation], figures: tuple[int, int, int], damaged: list[int],
        sideFileProblem: str | None = None,
    ) -> None:
        self.retained, self.backlog, self.retainedBytes = figures
        if sideFileProblem is not None and not self._sideFileWarned:
            self._sideFileWarned = True
            self.log.warn("store {path}: {problem}; a lost write-ahead log may go unnoticed at the next start",
                          path=self.path, problem=sideFileProblem)
        if damaged:
            self.damagedEntries += len(damaged)
            shown = ", ".join(str(offset) for offset in damaged[:10])
            self.log.error(
                "store {path}: {count} entry(ies) failed their checksum (offsets {offsets}{more}) and will not be "
                "delivered; they are recorded as dead letters with Deliveries 0 (see wsqueue-deadletters)",
                path=self.path, count=len(damaged), offsets=shown, more=" ..." if len(damaged) > 10 else "",
                damaged=damaged,
            )
        for operation in batch:
            if operation.failure is not None:
                operation.deferred.errback(operation.failure)
            else:
                operation.deferred.callback(operation.result)

    def _closedOnThread(self, problem: str | None) -> None:
        if problem is not None:
            self.log.warn(
                "store {path}: the write-ahead log could not be checkpointed at close ({problem}); "
                "everything committed is still in {path}-wal",
                path=self.path, problem=problem,
            )
        self._closed.callback(None)

    def _submit(self, name: str, *args) -> Deferred:
        if self.closed:
            return fail(StoreError(f"store {self.path} is closed"))
        operation = _Operation(name, args)
        if self._inline:
            damaged = runBatch(self._database, [operation])
            figures = (self._database.retained, self._database.backlog, self._database.bytes)
            self._finished([operation], figures, damaged, self._database.sideFileProblem)
        else:
            self._queue.put(operation)
        return operation.deferred

    def append(
        self, messages: Sequence[tuple[str, str]], producer: str | None = None, seqs: Sequence[int] | None = None
    ) -> Deferred[list[int | None]]:
        return self._submit("append", list(messages), producer, None if seqs is None else list(seqs))

    def readGroup(self, group: str, consumer: str, count: int, maxDeliver: int | None = None) -> Deferred[list[Entry]]:
        return self._submit("readGroup", group, consumer, count, maxDeliver)

    def history(self, pattern: str, after: int, limit: int) -> Deferred[History]:
        return self._submit("history", pattern, after, limit)

    def groupLags(self) -> Deferred[dict[str, int]]:
        return self._submit("groupLags")

    def releaseExpired(self, ackWait: float) -> Deferred[list[tuple[str, int]]]:
        return self._submit("releaseExpired", ackWait)

    def deadLetters(self, group: str | None = None) -> Deferred[list[DeadLetter]]:
        return self._submit("deadLetters", group)

    def applyRetention(
        self, maxMessages: int | None, maxBytes: int | None, maxAge: float | None
    ) -> Deferred[dict[str, int]]:
        return self._submit("applyRetention", maxMessages, maxBytes, maxAge)

    def trimGroupBacklog(self, maxBacklog: int, active: set[str]) -> Deferred[dict[str, int]]:
        return self._submit("trimGroupBacklog", maxBacklog, set(active))

    def expireGroups(self, idle: float, active: set[str]) -> Deferred[list[str]]:
        return self._submit("expireGroups", idle, set(active))

    def ack(self, group: str, offsets: Sequence[int]) -> Deferred[int]:
        return self._submit("ack", group, list(offsets))

    def pending(self, group: str) -> Deferred[list[PendingEntry]]:
        return self._submit("pending", group)

    def release(self, group: str, consumer: str) -> Deferred[int]:
        return self._submit("release", group, consumer)

    def close(self) -> Deferred[None]:
        """
        Finish what is queued, checkpoint the write-ahead log into the main file and
        close it; fire once the writer thread has closed the connection.  Firing
        earlier would let the process exit with everything still in the C{-wal}
        file (safe, but the main file alone would hold nothing: a copy of it would
        be empty).
        """
        if not self.closed:
            self.closed = True
            if self._inline:
                self._closedOnThread(self._database.close())
            else:
                self._queue.put(None)
        waiting: Deferred[None] = Deferred()

        def closed(result: object) -> object:
            waiting.callback(None)
            return result

        self._closed.addBoth(closed)
        return waiting
