# -*- test-case-name: tests.test_deadletters -*-
"""
C{wsqueue-deadletters STORE [--group G]}: list the messages msgqueue gave up on.

A message delivered alone C{--max-deliver} times without being acknowledged moves to
its group's dead letters.  So does, with C{"Deliveries": 0} and C{"Damaged": true},
an entry that failed its checksum when msgqueue read it (never delivered; what is
shown is what the store read, not what was sent).  This reads them from msgqueue's
SQLite file, read-only, so it is safe while msgqueue runs; one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from typing import TextIO

from wsqueue.store.sqlite import readDeadLetters


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="wsqueue-deadletters", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("store", help="msgqueue's store file (the PATH of --store sqlite:PATH)")
    parser.add_argument("--group", help="only this consumer group's dead letters")
    args = parser.parse_args(argv)
    try:
        db = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
        for letter in readDeadLetters(db, args.group):
            line = {"Group": letter.group, "Offset": letter.offset, "Topic": letter.topic,
                    "Content": letter.content, "Deliveries": letter.deliveries, "At": letter.at,
                    "Damaged": letter.damaged}
            print(json.dumps(line, ensure_ascii=False), file=out)
        db.close()
    except sqlite3.Error as e:
        print(f"wsqueue-deadletters: cannot read {args.store}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
