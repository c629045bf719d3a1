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
process go back to their groups.  The file is checked with C{PRAGMA quick_check} when
it is opened, and a damaged file is refused with one line, never silently used.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from wsqueue.store.base import DeadLetter, Entry, IMessageStore, PendingEntry

SCHEMA_VERSION = "1"
MAX_BATCH_OPERATIONS = 1000
"""The most queued operations one transaction takes."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    content TEXT NOT NULL,
    stored REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, next_offset INTEGER NOT NULL, last_active REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    grp TEXT NOT NULL,
    offset INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    delivered REAL NOT NULL,
    PRIMARY KEY (grp, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS producers (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    grp TEXT NOT NULL,
    offset INTEGER NOT NULL,
    topic TEXT NOT NULL,
    content TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    at REAL NOT NULL
);
"""
PRODUCER_EXPIRY = 7 * 24 * 3600
"""Producers not heard from for this long are forgotten (their resends are long over)."""


class StoreError(Exception):
    """
    The store cannot be opened or used; the message is one line naming the file.
    """


def readDeadLetters(db: sqlite3.Connection, group: str | None = None) -> list[DeadLetter]:
    """
    The dead letters in a store file (of one group, or all), oldest first.  Also used
    by C{wsqueue-deadletters} on a read-only connection.
    """
    query = "SELECT grp, offset, topic, content, deliveries, at FROM dead_letters"
    if group is not None:
        return [DeadLetter(*row) for row in db.execute(query + " WHERE grp = ? ORDER BY rowid", (group,))]
    return [DeadLetter(*row) for row in db.execute(query + " ORDER BY rowid")]


class _Database:
    """
    The SQL of the store.  Every method runs on the one thread that owns the connection.
    """

    def __init__(self, path: str, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._check()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._full = True
            self.db.executescript(_SCHEMA)
            self.epoch = self._epoch()
            # Entries pending for consumers of a previous process go back to their groups.
            self.db.execute("UPDATE pending SET consumer = '' WHERE consumer != ''")
            self.db.execute("DELETE FROM producers WHERE updated < ?", (now() - PRODUCER_EXPIRY,))
            first, last = self.db.execute("SELECT MIN(offset), MAX(offset) FROM entries").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {path} is unusable: {e}") from None
        except OSError as e:
            raise StoreError(f"cannot open store {path}: {e.strerror}") from None
        self._loadBounds(first, last)

    def _loadBounds(self, first: int | None, last: int | None) -> None:
        self.first = first if first is not None else self._nextOffset()
        self.next = (last + 1) if last is not None else self.first

    def reload(self) -> None:
        """
        Read the bounds again after a transaction was rolled back.
        """
        self._loadBounds(*self.db.execute("SELECT MIN(offset), MAX(offset) FROM entries").fetchone())

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
        return self.next - self.first

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
        stored = [(topic, content, now) for (topic, content), new in zip(messages, keep) if new]
        self.db.executemany("INSERT INTO entries (topic, content, stored) VALUES (?, ?, ?)", stored)
        offsets: list[int | None] = []
        for new in keep:
            offsets.append(self.next if new else None)
            self.next += new
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
        again: list[int] = []
        while len(again) < count:
            released = list(
                self.db.execute(
                    "SELECT offset, deliveries FROM pending WHERE grp = ? AND consumer = '' ORDER BY offset LIMIT ?",
                    (group, count - len(again)),
                )
            )
            dead = [offset for offset, deliveries in released if maxDeliver is not None and deliveries >= maxDeliver]
            if dead:
                self._deadLetter(group, dead, now)
            taken = [offset for offset, _ in released if offset not in dead]
            self.db.executemany(
                "UPDATE pending SET consumer = ?, deliveries = deliveries + 1, delivered = ? WHERE grp = ? AND offset = ?",
                [(consumer, now, group, offset) for offset in taken],
            )
            again.extend(taken)
            if not dead:
                # Dead letters made room for more given-back entries; otherwise there are none.
                break
        result = [Entry(offset, topic, content) for offset, topic, content in self._entries(again)]
        fresh = list(
            self.db.execute(
                "SELECT offset, topic, content FROM entries WHERE offset >= ? ORDER BY offset LIMIT ?",
                (nextOffset, count - len(result)),
            )
        ) if count > len(result) else []
        if fresh:
            self.db.executemany(
                "INSERT INTO pending VALUES (?, ?, ?, 1, ?)", [(group, offset, consumer, now) for offset, _, _ in fresh]
            )
            self.db.execute("UPDATE groups SET next_offset = ? WHERE name = ?", (fresh[-1][0] + 1, group))
            result.extend(Entry(offset, topic, content) for offset, topic, content in fresh)
        return result

    def _deadLetter(self, group: str, offsets: list[int], now: float) -> None:
        marks = ",".join("?" * len(offsets))
        self.db.execute(
            "INSERT INTO dead_letters SELECT p.grp, p.offset, e.topic, e.content, p.deliveries, ? "
            f"FROM pending AS p JOIN entries AS e ON e.offset = p.offset WHERE p.grp = ? AND p.offset IN ({marks})",
            (now, group, *offsets),
        )
        self.db.execute(f"DELETE FROM pending WHERE grp = ? AND offset IN ({marks})", (group, *offsets))
        self._trim()

    def _entries(self, offsets: list[int]) -> list[tuple[int, str, str]]:
        if not offsets:
            return []
        marks = ",".join("?" * len(offsets))
        return list(
            self.db.execute(f"SELECT offset, topic, content FROM entries WHERE offset IN ({marks}) ORDER BY offset", offsets)
        )

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
        if lowest is None or lowest <= self.first:
            return
        self.db.execute("DELETE FROM entries WHERE offset < ?", (lowest,))
        self.first = min(lowest, self.next)

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

    def applyRetention(self, maxMessages: int | None, maxBytes: int | None, maxAge: float | None) -> dict[str, int]:
        cut = self.first
        if maxMessages is not None:
            cut = max(cut, self.next - maxMessages)
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
            unseen = max(0, cut - max(nextOffset, self.first))
            pending = self.db.execute(
                "SELECT COUNT(*) FROM pending WHERE grp = ? AND offset < ?", (name, cut)
            ).fetchone()[0]
            if unseen + pending:
                lost[name] = unseen + pending
        self.db.execute("DELETE FROM pending WHERE offset < ?", (cut,))
        self.db.execute("UPDATE groups SET next_offset = ? WHERE next_offset < ?", (cut, cut))
        self.db.execute("DELETE FROM entries WHERE offset < ?", (cut,))
        self.first = cut
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

    def close(self) -> None:
        self.db.close()


class _Operation:
    __slots__ = ("args", "deferred", "failure", "name", "result")

    def __init__(self, name: str, args: tuple) -> None:
        self.name = name
        self.args = args
        self.deferred: Deferred = Deferred()
        self.result: Any = None
        self.failure: Failure | None = None


def runBatch(database: _Database, operations: list[_Operation]) -> None:
    """
    Run C{operations} in one transaction, each under its own savepoint so that one
    failing operation does not undo the others; commit once.  If the commit fails,
    every operation in the batch fails.
    """
    try:
        database.setDurability(any(operation.name == "append" for operation in operations))
        database.db.execute("BEGIN IMMEDIATE")
        for number, operation in enumerate(operations):
            database.db.execute(f"SAVEPOINT op{number}")
            try:
                operation.result = getattr(database, operation.name)(*operation.args)
            except Exception:  # noqa: BLE001 -- reported to that operation's caller
                operation.failure = Failure()
                database.db.execute(f"ROLLBACK TO op{number}")
            database.db.execute(f"RELEASE op{number}")
        database.db.execute("COMMIT")
    except Exception:  # noqa: BLE001 -- the whole batch failed to commit
        failure = Failure()
        try:
            database.db.execute("ROLLBACK")
            database.reload()
        except sqlite3.Error:
            pass
        for operation in operations:
            operation.failure = failure


@implementer(IMessageStore)
class SQLiteStore:
    """
    The durable store.  C{retained} is kept up to date on the reactor's side.

    @param runInline: run each operation at once in the calling thread instead of on
        the writer thread (for tests that drive the store synchronously).
    """

    def __init__(
        self,
        path: str,
        callFromThread: Callable | None = None,
        runInline: bool = False,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._now = now
        self._inline = runInline
        self._callFromThread = callFromThread
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        if runInline:
            self._database = _Database(path, now)
        else:
            self._database = self._openOnThread(path)
        self.epoch = self._database.epoch
        self.retained = self._database.retained
        self.closed = False

    def _openOnThread(self, path: str) -> _Database:
        opened: queue.SimpleQueue = queue.SimpleQueue()

        def run() -> None:
            try:
                database = _Database(path, self._now)
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
        while True:
            operation = self._queue.get()
            if operation is None:
                database.close()
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
            runBatch(database, batch)
            self._callFromThread(self._finished, batch, database.retained)

    def _finished(self, batch: list[_Operation], retained: int) -> None:
        self.retained = retained
        for operation in batch:
            if operation.failure is not None:
                operation.deferred.errback(operation.failure)
            else:
                operation.deferred.callback(operation.result)

    def _submit(self, name: str, *args) -> Deferred:
        if self.closed:
            return fail(StoreError(f"store {self.path} is closed"))
        operation = _Operation(name, args)
        if self._inline:
            runBatch(self._database, [operation])
            self._finished([operation], self._database.retained)
        else:
            self._queue.put(operation)
        return operation.deferred

    def append(
        self, messages: Sequence[tuple[str, str]], producer: str | None = None, seqs: Sequence[int] | None = None
    ) -> Deferred[list[int | None]]:
        return self._submit("append", list(messages), producer, None if seqs is None else list(seqs))

    def readGroup(self, group: str, consumer: str, count: int, maxDeliver: int | None = None) -> Deferred[list[Entry]]:
        return self._submit("readGroup", group, consumer, count, maxDeliver)

    def releaseExpired(self, ackWait: float) -> Deferred[list[tuple[str, int]]]:
        return self._submit("releaseExpired", ackWait)

    def deadLetters(self, group: str | None = None) -> Deferred[list[DeadLetter]]:
        return self._submit("deadLetters", group)

    def applyRetention(
        self, maxMessages: int | None, maxBytes: int | None, maxAge: float | None
    ) -> Deferred[dict[str, int]]:
        return self._submit("applyRetention", maxMessages, maxBytes, maxAge)

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
        Finish what is queued, then close the file; fire when it is closed.
        """
        if self.closed:
            return succeed(None)
        if self._inline:
            self.closed = True
            self._database.close()
            return succeed(None)
        last = self._submit("pending", "")
        self.closed = True
        self._queue.put(None)
        return last.addCallback(lambda _: None)
