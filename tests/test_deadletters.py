"""
wsqueue-deadletters: an operator reads the dead letters from msgqueue's store.
"""

from __future__ import annotations

import io
import json
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
            for _ in range(2):
                self.successResultOf(store.readGroup(group, "c", 1))
                self.successResultOf(store.release(group, "c"))
            self.successResultOf(store.readGroup(group, "c", 1, maxDeliver=2))
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
        self.assertEqual([(d["Group"], d["Offset"], d["Content"], d["Deliveries"]) for d in letters],
                         [("g", 1, "poison", 2), ("h", 1, "poison", 2)])
        self.assertEqual([d["Group"] for d in self.run_("--group", "h")[1]], ["h"])
        self.assertEqual(self.successResultOf(self.store.append([("t", "more")])), [3])

    def test_unreadable(self) -> None:
        """
        A file that is not a store is one line on stderr and status 1.
        """
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(main([self.mktemp()]), 1)
        self.assertIn("cannot read", sys.stderr.getvalue())
