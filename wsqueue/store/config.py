# -*- test-case-name: tests.test_store -*-
"""
The C{--store} option: which L{IMessageStore} msgqueue keeps its queue in.

  sqlite:PATH   durable, in a SQLite file (the default: ./wsqueue-data/msgqueue.sqlite3)
  memory        in memory only: fast, and lost when msgqueue stops
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from wsqueue.store.base import IMessageStore
from wsqueue.store.memory import MemoryStore
from wsqueue.store.sqlite import SQLiteStore

DEFAULT_STORE = "sqlite:./wsqueue-data/msgqueue.sqlite3"


def parseStoreSpec(spec: str) -> tuple[str, str | None]:
    """
    Split a C{--store} value into its kind and path; raise L{ValueError} if it is neither.
    """
    if spec == "memory":
        return "memory", None
    kind, sep, path = spec.partition(":")
    if kind == "sqlite" and sep and path:
        return "sqlite", path
    raise ValueError(f"--store must be 'memory' or 'sqlite:PATH', not {spec!r}")


def openStore(spec: str, reactor) -> IMessageStore:
    """
    Open the store C{spec} names.  A SQLite file is checked first; a damaged or
    unreadable one raises L{wsqueue.store.sqlite.StoreError}.
    """
    kind, path = parseStoreSpec(spec)
    if kind == "memory":
        return MemoryStore()
    assert path is not None  # parseStoreSpec gives a path for every kind but memory
    return SQLiteStore(path, callFromThread=reactor.callFromThread)


class StoreService(Service):
    """
    Closes the store when the daemon stops, after what was queued has been written.
    """

    def __init__(self, store: IMessageStore) -> None:
        self.store = store

    def stopService(self) -> Deferred:
        super().stopService()
        return self.store.close()
