"""
wsqueue-backup: a consistent copy of msgqueue's store, also while it is written.
"""

from __future__ import annotations

import io
import os
import sqlite3

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue.backup import main
from wsqueue.store.sqlite import SQLiteStore, checksum


def entriesOf(path: str) -> list[tuple[int, str]]:
    """
    The (offset, content) of every entry in a store file, each checked against its
    checksum, read from the file alone.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        rows = list(db.execute("SELECT offset, topic, content, crc FROM entries ORDER BY offset"))
    finally:
        db.close()
    for offset, topic, content, crc in rows:
        assert checksum(topic.encode(), content.encode()) == crc, offset
    return [(offset, content) for offset, _, content, _ in rows]


class BackupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "queue.sqlite3")
        self.dest = os.path.join(self.folder, "copy.sqlite3")
        self.store = SQLiteStore(self.path, runInline=True)
        self.addCleanup(self.store.close)
        self.successResultOf(self.store.append([("t", f"m{i}") for i in range(20)]))

    def run_(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def test_copy(self) -> None:
        """
        The copy holds every entry in its main file alone (no write-ahead log beside
        it), the store stays usable, and one line says what was copied.
        """
        code, out, err = self.run_(self.path, self.dest)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"wsqueue-backup: copied {self.path} to {self.dest} (20 entries, "
                              f"{os.path.getsize(self.dest)} bytes, epoch {self.store.epoch})\n")
        self.assertFalse(os.path.exists(self.dest + "-wal"))
        self.assertEqual(entriesOf(self.dest), [(i + 1, f"m{i}") for i in range(20)])
        self.assertEqual(self.successResultOf(self.store.append([("t", "more")])), [21])
        copy = SQLiteStore(self.dest, runInline=True)
        self.addCleanup(copy.close)
        self.assertEqual((copy.epoch, copy.retained), (self.store.epoch, 20))

    def test_existingDestination(self) -> None:
        """
        An existing DEST is left alone unless --force.
        """
        with open(self.dest, "w") as f:
            f.write("precious")
        code, out, err = self.run_(self.path, self.dest)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"wsqueue-backup: {self.dest} exists; pass --force to overwrite it\n")
        with open(self.dest) as f:
            self.assertEqual(f.read(), "precious")
        self.assertEqual(self.run_(self.path, self.dest, "--force")[0], 0)
        self.assertEqual(len(entriesOf(self.dest)), 20)

    def test_errors(self) -> None:
        """
        A missing store, a file that is not a store, an unwritable destination and a
        usage error are each one line on stderr and status 1, never a traceback, and
        leave no partial copy behind.
        """
        garbage = os.path.join(self.folder, "garbage")
        with open(garbage, "wb") as f:
            f.write(b"not a database" * 200)
        plain = os.path.join(self.folder, "plain.sqlite3")
        sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
        cases = [
            ((os.path.join(self.folder, "nothing"), self.dest), "no store at"),
            ((garbage, self.dest), "file is not a database"),
            ((plain, self.dest), "it is not a wsqueue store"),
            ((self.path, os.path.join(self.folder, "no", "such", "folder", "copy")), "cannot back up"),
        ]
        for argv, reason in cases:
            code, out, err = self.run_(*argv)
            self.assertEqual((code, out), (1, ""), argv)
            self.assertIn(reason, err)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertTrue(err.startswith("wsqueue-backup: "))
        self.assertEqual(sorted(name for name in os.listdir(self.folder) if "partial" in name or "copy" in name), [])
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)
        with self.assertRaises(SystemExit) as raised:
            main([self.path])
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("(see --help)", err.getvalue())


class OnlineBackupTests(TestCase):
    """
    A backup taken while msgqueue's store commits appends on its writer thread.
    """

    timeout = 60

    async def test_whileWriting(self) -> None:
        """
        Every copy taken while the store's writer thread keeps committing appends
        is one consistent snapshot: it opens, passes quick_check and every checksum,
        and holds offsets 1..n with no gap, n growing from copy to copy.
        """
        from twisted.internet import reactor

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "queue.sqlite3")
        store = SQLiteStore(path, callFromThread=reactor.callFromThread)
        self.addCleanup(store.close)
        stop = []

        async def write() -> int:
            number = 0
            while not stop:
                await store.append([("t", f"w{number + i}") for i in range(50)])
                number += 50
            return number

        writing = Deferred.fromCoroutine(write())
        self.addCleanup(lambda: stop.append(True) or writing)
        counts = []
        for copy in range(5):
            dest = os.path.join(folder, f"copy{copy}.sqlite3")
            code = await deferToThread(main, [path, dest], io.StringIO(), io.StringIO())
            self.assertEqual(code, 0)
            entries = entriesOf(dest)
            self.assertEqual(entries, [(offset, f"w{offset - 1}") for offset in range(1, len(entries) + 1)])
            counts.append(len(entries))
        stop.append(True)
        written = await writing
        self.assertEqual(counts, sorted(counts))
        self.assertGreater(counts[-1], counts[0], f"nothing was written during the backups: {counts}")
        self.assertGreaterEqual(written, counts[-1])
        print(f"\nFIGURES test_whileWriting: copies={counts} written={written}")
