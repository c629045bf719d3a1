# -*- test-case-name: tests.test_backup -*-
"""
C{wsqueue-backup STORE DEST [--force]}: a consistent copy of msgqueue's store, taken
while msgqueue runs.

Copying the file itself is not a backup: SQLite keeps recent transactions in the
C{-wal} file next to it, so a copy of the main file alone misses them, and a copy
taken while msgqueue writes can be torn.  This uses SQLite's online backup API
(C{Connection.backup}) from a read-only connection: the copy is one consistent
snapshot, the main file alone holds all of it, and msgqueue keeps writing meanwhile
(WAL readers do not block the writer).  The copy is written next to C{DEST} and
renamed into place once complete, so C{DEST} is never a partial file.

To restore: stop msgqueue, copy C{DEST} over the store's path (removing any
C{-wal} and C{-shm} files there), and delete C{STORE.committed}: it records what the
old store had committed, more than the backup holds, and msgqueue refuses to start
on less than it says (see L{wsqueue.store.sqlite.checkCommitted}).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

PROG = "wsqueue-backup"


class _Parser(argparse.ArgumentParser):
    """
    Usage errors as one line and status 1, like every other error of this command.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: {message} (see --help)\n")


class BackupError(Exception):
    """
    Why the backup was not made, in one line.
    """


def backup(store: str, dest: str, force: bool = False) -> tuple[int, int, str]:
    """
    Copy C{store} to C{dest}; return how many entries and bytes the copy holds and
    its epoch.  Raise L{BackupError} if C{dest} exists (unless C{force}) or C{store}
    is not a readable wsqueue store.
    """
    if os.path.exists(dest) and not force:
        raise BackupError(f"{dest} exists; pass --force to overwrite it")
    if not os.path.isfile(store):
        raise BackupError(f"no store at {store}")
    partial = dest + ".partial"
    try:
        source = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
        try:
            epoch = source.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            if epoch is None:
                raise BackupError(f"{store} is not a wsqueue store (it has no epoch)")
            if os.path.exists(partial):
                os.remove(partial)
            target = sqlite3.connect(partial)
            try:
                # One step: a single read transaction, so one consistent snapshot.
                source.backup(target)
                entries = target.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
                # The copy stands alone: no write-ahead log beside it.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
        os.replace(partial, dest)
    except sqlite3.Error as e:
        _removeQuietly(partial)
        message = str(e)
        if "no such table" in message:
            message = "it is not a wsqueue store"
        raise BackupError(f"cannot back up {store}: {message}") from None
    except OSError as e:
        _removeQuietly(partial)
        raise BackupError(f"cannot write {dest}: {e.strerror}") from None
    except BackupError:
        _removeQuietly(partial)
        raise
    return entries, os.path.getsize(dest), epoch[0]


def _removeQuietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = _Parser(prog=PROG, description="Copy msgqueue's store safely, while msgqueue runs (SQLite's backup API).")
    parser.add_argument("store", help="msgqueue's store file (the PATH of --store sqlite:PATH)")
    parser.add_argument("dest", help="where to write the copy (refused if it exists, unless --force)")
    parser.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    args = parser.parse_args(argv)
    try:
        entries, size, epoch = backup(args.store, args.dest, args.force)
    except BackupError as e:
        print(f"{PROG}: {e}", file=err)
        return 1
    print(f"{PROG}: copied {args.store} to {args.dest} ({entries} entries, {size} bytes, epoch {epoch})", file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
