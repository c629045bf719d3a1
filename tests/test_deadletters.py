"""
wsqueue-deadletters: an operator reads the dead letters from msgqueue's store.
"""

from __future__ import annotations

import io
import json
import sqlite3
import sys

from twisted.trial.unittest import SynchronousTestCase

from wsqueue.deadletters import main
from wsqueue.store.sqlite import SQLiteStore


class DeadLettersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite3"
        store = SQLiteStore(self.path, runInline=True)
        self.successResultOf(store.append([("t", "poison"), ("u", "fine")]))
        for group in ("g", "h"):
            self.successResultOf(store.readGroup(group, "c", 0))
        for group in ("g", "h"):
            # Twice in a batch, then once alone: dead with --max-deliver 1.
            for _ in range(3):
                self.successResultOf(store.readGroup(group, "c", 1, maxDeliver=1))
                self.successResultOf(store.release(group, "c"))
            self.successResultOf(store.readGroup(group, "c", 1, maxDeliver=1))
        self.store = store
        self.addCleanup(store.close)

    def run_(self, *argv: str) -> tuple[int, list[dict]]:
        out = io.StringIO()
        code = main([self.path, *argv], out=out)
        return code, [json.loads(line) for line in out.getvalue().splitlines()]

    def test_lists(self) -> None:
        """
        Every dead letter, as one JSON line, with its group, offset and delivery count;
        --group filters; the store stays usable (read-only access).
        """
        code, letters = self.run_()
        self.assertEqual(code, 0)
        self.assertEqual([(d["Group"], d["Offset"], d["Content"], d["Deliveries"], d["Damaged"]) for d in letters],
                         [("g", 1, "poison", 3, False), ("h", 1, "poison", 3, False)])
        self.assertEqual([d["Group"] for d in self.run_("--group", "h")[1]], ["h"])
        self.assertEqual(self.successResultOf(self.store.append([("t", "more")])), [3])

    def test_damaged(self) -> None:
        """
        An entry that failed its checksum is listed for each group that needed it,
        with Deliveries 0 and Damaged true: what the store read, not what was sent.
        """
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("UPDATE entries SET content = 'finE' WHERE offset = 2")
        db.close()
        self.successResultOf(self.store.release("g", "c"))
        self.assertEqual(self.successResultOf(self.store.readGroup("g", "c", 5)), [])
        code, letters = self.run_("--group", "g")
        self.assertEqual(code, 0)
        self.assertEqual([(d["Offset"], d["Content"], d["Deliveries"], d["Damaged"]) for d in letters],
                         [(1, "poison", 3, False), (2, "finE", 0, True)])

    def test_unreadable(self) -> None:
        """
        A file that is not a store is one line on stderr and status 1.
        """
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(main([self.mktemp()]), 1)
        self.assertIn("cannot read", sys.stderr.getvalue())
