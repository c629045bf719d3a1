# -*- test-case-name: tests.test_readiness -*-
"""
A daemon's readiness, told to whoever started it: C{--ready-file PATH}.

Supervisors and tests need to know when a daemon can be used: when it listens, when
its links to msgqueue are open.  Matching its log lines for that makes the log's
wording an interface, and polling a port says nothing about the links.  With
C{--ready-file PATH} the daemon appends one JSON object per line to PATH as its
state changes:

    {"event": "listening", "stage": "publisher", "host": "127.0.0.1", "port": 8081}
    {"event": "listening", "stage": "publisher", "host": "10.0.0.5", "port": 9000, "tls": false}
    {"event": "listening", "stage": "publisher", "path": "/run/wsqueue/publisher.sock", "tls": false}
    {"event": "link-open", "url": "wss://localhost:8080/pushmsg?producer=..."}
    {"event": "store-open", "store": "redis://127.0.0.1:6379/0"}   msgqueue on a Redis store
    {"event": "ready"}                   once every listener listens, every link has opened once
                                         and the store (Redis) is usable
    {"event": "link-closed", "url": "..."}

A file, a named pipe, or an inherited descriptor (C{/dev/fd/3}, as the tests use)
all work.  A listening event names a TCP listener's C{host} and C{port}, a UNIX
socket's C{path} (C{--listen unix:PATH}), anything else's C{address}; C{"tls":
false} marks a listener without TLS (absent, it serves TLS, as every listener did
before C{--listen}).  The file is opened non-blocking and each line written with one
C{write}: a reader that stops reading loses events (logged once), it never
blocks the daemon.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from twisted.logger import Logger


class ReadyFile:
    """
    Where a daemon reports its state changes (see the module docstring), and what it
    waits for before it reports C{ready}.

    @ivar path: the file, or L{None} when the daemon was given no C{--ready-file}
        (events are then only counted, so that the same code runs either way).
    """

    log = Logger()

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._listenersExpected = 0
        self._linksExpected: list[frozenset[str]] = []
        self._listening = 0
        self._linked: set[str] = set()
        self._openNow: set[str] = set()
        self.checks: list[Callable[[], str | None]] = []
        """More reasons not to be ready (msgqueue: its store does not take writes)."""
        self._storesExpected = 0
        self._storesOpen = 0
        self.isReady = False
        self._broken = False

    def expectListener(self) -> None:
        """
        One more listener must listen before the daemon is ready.
        """
        self._listenersExpected += 1

    def expectLink(self, url: str, *alternatives: str) -> None:
        """
        The link to C{url} (or, for a link that may go to any of several msgqueue
        daemons, to one of C{alternatives}) must have opened once before the
        daemon is ready.
        """
        self._linksExpected.append(frozenset((url, *alternatives)))

    def expectStore(self) -> None:
        """
        A store that connects after start-up (Redis) must be usable before the
        daemon is ready.
        """
        self._storesExpected += 1

    def storeOpened(self, store: str) -> None:
        """
        The store C{store} (described without its password) can be used.
        """
        self._storesOpen += 1
        self._write({"event": "store-open", "store": store})
        self._checkReady()

    def listening(
        self, stage: str, host: str | None = None, port: int | None = None, *,
        path: str | None = None, address: str | None = None, tls: bool = True,
    ) -> None:
        """
        One listener of C{stage} listens: on C{host} and C{port} (TCP), at C{path} (a
        UNIX socket) or at C{address} (anything else); C{tls} says whether it serves TLS.
        """
        self._listening += 1
        event: dict[str, object] = {"event": "listening", "stage": stage}
        where = {"host": host, "port": port, "path": path, "address": address}
        event.update((name, value) for name, value in where.items() if value is not None)
        if not tls:
            event["tls"] = False
        self._write(event)
        self._checkReady()

    def linkOpened(self, url: str) -> None:
        self._linked.add(url)
        self._openNow.add(url)
        self._write({"event": "link-open", "url": url})
        self._checkReady()

    def linkClosed(self, url: str) -> None:
        self._openNow.discard(url)
        self._write({"event": "link-closed", "url": url})

    def problem(self) -> str | None:
        """
        Why the daemon is not ready now (C{/readyz}), or L{None}: a listener not
        listening yet, a link to msgqueue not open now, a store not open.
        """
        if self._listening < self._listenersExpected:
            return "not listening yet"
        for urls in self._linksExpected:
            if not urls & self._openNow:
                return f"link to msgqueue is down ({min(urls).split('?')[0]})"
        if self._storesOpen < self._storesExpected:
            return "store not open yet"
        for check in self.checks:
            problem = check()
            if problem is not None:
                return problem
        return None

    def _checkReady(self) -> None:
        if (
            self.isReady or self._listening < self._listenersExpected
            or not all(urls & self._linked for urls in self._linksExpected)
            or self._storesOpen < self._storesExpected
        ):
            return
        self.isReady = True
        self._write({"event": "ready"})

    def _write(self, event: dict) -> None:
        if self.path is None or self._broken:
            return
        line = json.dumps(event, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
            os.write(self._fd, line)
        except OSError as e:
            self._broken = True
            self.log.error("--ready-file {path}: {error}; no more readiness events are written",
                           path=self.path, error=e.strerror)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def readyFileOf(options) -> ReadyFile:
    """
    The daemon's L{ReadyFile}, one per daemon (the all-in-one daemon's stages share it).
    """
    existing = getattr(options, "readyFile", None)
    if existing is None:
        existing = options.readyFile = ReadyFile(options.get("ready-file"))
    return existing
