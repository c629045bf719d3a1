# -*- test-case-name: tests.test_throttle -*-
"""
Sign-in throttling: a password-guessing client must not be able to keep the daemon's
cores busy hashing, nor lock a user out of signing in.

Two mechanisms, both ahead of any hashing:

  - L{FailureThrottle}: after repeated failures from one address, or for one user
    name, within a window, further attempts are refused outright (HTTP 429 with
    C{Retry-After}) for a while, without hashing anything;
  - L{HashQueue}: the scrypt checks that remain run one or a few at a time on the
    thread pool, with a bounded queue in which users the credentials file knows go
    first; past the bound an attempt is refused at once (503).  Unauthenticated
    clients can so take at most C{concurrency} cores, and a known user's sign-in
    waits behind at most the attempts already hashing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail

T = TypeVar("T")

MAX_FAILURES = 5
"""Failures from one address (or for one user) within L{FAILURE_WINDOW} before refusals start."""
FAILURE_WINDOW = 60.0
BLOCK_SECONDS = 60.0
"""How long refusals last once they start."""
MAX_TRACKED = 100_000
"""Addresses and user names remembered at most (the oldest are forgotten first)."""


class Throttled(Exception):
    """
    The attempt is refused without checking the password: too many failures, or
    too many attempts waiting.  C{retryAfter} is in whole seconds.
    """

    def __init__(self, reason: str, retryAfter: int, status: int = 429) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryAfter = retryAfter
        self.status = status


class _Record:
    __slots__ = ("blockedUntil", "failures")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.blockedUntil = 0.0


class FailureThrottle:
    """
    Counts sign-in failures per address and per user name, and says when an attempt
    must be refused before anything is hashed.
    """

    def __init__(self, clock, maxFailures: int = MAX_FAILURES, window: float = FAILURE_WINDOW,
                 block: float = BLOCK_SECONDS) -> None:
        self.clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.block = block
        self._records: dict[str, _Record] = {}

    def check(self, address: str, user: str) -> None:
        """
        Raise L{Throttled} if C{address} or C{user} is refused now.
        """
        now = self.clock.seconds()
        for key in (f"a:{address}", f"u:{user}"):
            record = self._records.get(key)
            if record is not None and record.blockedUntil > now:
                raise Throttled("too many failed sign-ins; try again later", int(record.blockedUntil - now) + 1)

    def failed(self, address: str, user: str) -> None:
        now = self.clock.seconds()
        for key in (f"a:{address}", f"u:{user}"):
            record = self._records.pop(key, None) or _Record()
            self._records[key] = record  # most recently failed last
            record.failures.append(now)
            while record.failures and record.failures[0] <= now - self.window:
                record.failures.popleft()
            if len(record.failures) >= self.maxFailures:
                record.blockedUntil = now + self.block
                record.failures.clear()
        while len(self._records) > MAX_TRACKED:
            del self._records[next(iter(self._records))]

    def succeeded(self, address: str, user: str) -> None:
        """
        A right password: the user's failures are forgotten (not the address's: a
        guesser who also knows one password must not reset its own count).
        """
        self._records.pop(f"u:{user}", None)


class HashQueue:
    """
    Runs password checks at most C{concurrency} at a time, with at most C{maxWaiting}
    waiting; C{priority} attempts (users the file knows) are served first.
    """

    def __init__(self, runInThread: Callable[[Callable[[], Any]], Deferred[Any]], concurrency: int = 1,
                 maxWaiting: int = 64) -> None:
        self._runInThread = runInThread
        self.concurrency = concurrency
        self.maxWaiting = maxWaiting
        self.running = 0
        self._known: deque[tuple[Callable[[], object], Deferred]] = deque()
        self._unknown: deque[tuple[Callable[[], object], Deferred]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._known) + len(self._unknown)

    def run(self, check: Callable[[], T], priority: bool) -> Deferred[T]:
        """
        Run C{check} on the thread pool when a place is free; fail with
        L{Throttled} (503) at once when too many already wait.
        """
        if self.running < self.concurrency:
            return self._start(check)
        if self.waiting >= self.maxWaiting:
            if not priority or not self._unknown:
                return fail(Throttled("too many sign-ins waiting; try again later", 1, 503))
            # A known user's attempt takes the place of the newest unknown one.
            _, dropped = self._unknown.pop()
            dropped.errback(Throttled("too many sign-ins waiting; try again later", 1, 503))
        d: Deferred[T] = Deferred()
        (self._known if priority else self._unknown).append((check, d))
        return d

    def _start(self, check: Callable[[], T]) -> Deferred[T]:
        self.running += 1
        d = self._runInThread(check)
        d.addBoth(self._finished)
        return d

    def _finished(self, result: T) -> T:
        self.running -= 1
        queue = self._known or self._unknown
        if queue:
            check, waiting = queue.popleft()
            self._start(check).chainDeferred(waiting)
        return result
