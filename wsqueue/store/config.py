# -*- test-case-name: tests.test_store -*-
"""
The C{--store} option: which L{IMessageStore} msgqueue keeps its queue in.

  sqlite:PATH   durable, in a SQLite file (the default: ./wsqueue-data/msgqueue.sqlite3)
  memory        in memory only: fast, and lost when msgqueue stops
  redis://[USER:PASSWORD@]HOST[:PORT][/DB]
                in Redis, shared by every msgqueue that names it (rediss:// for TLS,
                verified against --store-ca or the system's CAs;
                redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB] for the
                master that Redis Sentinel names)

A Redis store must connect before msgqueue listens: wait for L{storeReady}.
"""

from __future__ import annotations

import sys

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from wsqueue.store.base import IMessageStore
from wsqueue.store.memory import MemoryStore
from wsqueue.store.sqlite import SQLiteStore, StoreError

DEFAULT_STORE = "sqlite:./wsqueue-data/msgqueue.sqlite3"


def parseStoreSpec(spec: str) -> tuple[str, str | None]:
    """
    Split a C{--store} value into its kind and path (for Redis: the whole URL,
    checked); raise L{ValueError} saying what is wrong.
    """
    if spec == "memory":
        return "memory", None
    kind, sep, path = spec.partition(":")
    if kind == "sqlite" and sep and path:
        return "sqlite", path
    if kind in ("redis", "rediss", "redis+sentinel") and path.startswith("//"):
        from wsqueue.store.redis import parseRedisURL  # imports txredisapi, which imports the reactor

        parseRedisURL(spec)
        return "redis", spec
    raise ValueError(f"--store must be 'memory', 'sqlite:PATH' or a redis:// URL, not {spec!r}")


def openStore(
    spec: str, reactor, caPath: str | None = None, minReplicas: int = 0, historyKeep: int = 0
) -> IMessageStore:
    """
    Open the store C{spec} names.  A SQLite file is checked first; a damaged or
    unreadable one raises L{wsqueue.store.sqlite.StoreError}.  A Redis store is
    made but not connected: L{storeReady} connects it.

    @param caPath: the CA certificate that a C{rediss://} server's certificate
        must chain to (the system's CAs when L{None}); only for C{rediss://}.
    @param minReplicas: for Redis, how many replicas must have each append
        before it is acknowledged (see L{RedisStore}).
    @param historyKeep: how many of the newest entries to keep for history reads
        once every group has them (C{--history-max}).
    """
    kind, path = parseStoreSpec(spec)
    if kind == "redis":
        return _redisStore(spec, reactor, caPath, minReplicas, historyKeep)
    if caPath is not None:
        raise StoreError(f"a CA certificate is only for a rediss:// store, not {spec!r}")
    if kind == "memory":
        return MemoryStore(historyKeep=historyKeep)
    assert path is not None  # parseStoreSpec gives a path for every kind but memory
    return SQLiteStore(path, callFromThread=reactor.callFromThread, historyKeep=historyKeep)


def _redisStore(spec: str, reactor, caPath: str | None, minReplicas: int, historyKeep: int) -> IMessageStore:
    from wsqueue.store.redis import RedisStore, RedisStoreError, parseRedisURL
    from wsqueue.tls import TLSConfigurationError, clientCreator

    address = parseRedisURL(spec)
    if caPath is not None and not address.tls:
        raise RedisStoreError(f"a CA certificate is only for a rediss:// store, not {address.describe()}")
    creator = None
    if address.tls:
        try:
            creator = clientCreator(address.host, caPath)
        except TLSConfigurationError as e:
            raise RedisStoreError(str(e))
    return RedisStore(address, reactor=reactor, tlsCreator=creator, minReplicas=minReplicas, historyKeep=historyKeep)


def describeStore(spec: str) -> str:
    """
    C{spec} as logs and readiness events may show it: a Redis URL without its
    password (C{redis://user:***@host:6379/0}); other stores as they are.
    """
    kind, _ = parseStoreSpec(spec)
    if kind != "redis":
        return spec
    from wsqueue.store.redis import parseRedisURL

    address = parseRedisURL(spec)
    scheme = spec.partition("://")[0]
    user = f"{address.username or ''}:***@" if address.password is not None else ""
    if address.sentinels:
        hosts = ",".join(f"{host}:{port}" for host, port in address.sentinels)
        return f"{scheme}://{user}{hosts}/{address.masterName}/{address.db}"
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{scheme}://{user}{host}:{address.port}/{address.db}"


def opensLater(store: IMessageStore) -> bool:
    """
    Whether C{store} connects after start-up (Redis: see L{storeReady}), rather
    than being usable once made (memory, SQLite).
    """
    redis = sys.modules.get("wsqueue.store.redis")  # not imported: no Redis store was made
    return redis is not None and isinstance(store, redis.RedisStore)


def storeReady(store: IMessageStore) -> Deferred[None]:
    """
    Fire once C{store} can be used: at once for a memory or SQLite store; once a
    Redis store has connected and read its epoch, or fail with one
    L{wsqueue.store.sqlite.StoreError} line ("cannot reach Redis at HOST:PORT:
    ...").  msgqueue waits for it before it listens.
    """
    if opensLater(store):
        return store.open().addCallback(lambda _: None)  # type: ignore[attr-defined]
    return succeed(None)


class StoreService(Service):
    """
    Closes the store when the daemon stops, after what was queued has been written.
    """

    def __init__(self, store: IMessageStore) -> None:
        self.store = store

    def stopService(self) -> Deferred:
        super().stopService()
        return self.store.close()
