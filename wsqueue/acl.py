# -*- test-case-name: tests.test_acl -*-
"""
Per-user topic permissions, read from the file given with C{--acl}.

One rule per line, C{USER ACTION PATTERN} separated by whitespace::

    # the news desk writes, everyone reads
    alice publish   news.>      # desk
    *     subscribe news.>

C{ACTION} is C{publish} or C{subscribe}, C{USER} a user name or C{*} for
everyone, C{PATTERN} a topic or a pattern with NATS's wildcards (see
L{wsqueue.topics}).  Blank lines are ignored, and so is everything from a field
that starts with C{#} to the end of its line (C{#} inside a field is part of it:
topics may hold C{#}).

With an ACL, whatever no rule allows is refused: publishing to a topic needs a
C{publish} rule (for the user or C{*}) whose pattern matches the topic, and
subscribing to a pattern needs a C{subscribe} rule whose pattern covers it (every
topic the subscription could receive; L{wsqueue.topics.covers}).

L{ACLFile} re-reads the file when it changes, as the credentials file is
(L{wsqueue.auth.CredentialsFileChecker}): a file that became unreadable or bad
leaves the rules loaded before in force, and says so in the log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsqueue.topics import TopicTrie, covers
from wsqueue.wire import checkPattern

PUBLISH = "publish"
SUBSCRIBE = "subscribe"
EVERYONE = "*"
"""The C{USER} of a rule that applies to every user."""

ACTIONS = (PUBLISH, SUBSCRIBE)
_EXPECTED = f"expected USER {PUBLISH}|{SUBSCRIBE} PATTERN"
_COMMENT = "#"
_PUBLISH_CACHE_SIZE = 10_000


class ACLError(Exception):
    """
    The ACL file cannot be read or has a bad line; one line of text, naming the
    file (and the line), fit for an operator's eyes.
    """


@dataclass(frozen=True)
class Rule:
    """
    One line of an ACL file: C{user} (or L{EVERYONE}) may C{action}
    (L{PUBLISH} or L{SUBSCRIBE}) on what C{pattern} matches or covers.
    """

    user: str
    action: str
    pattern: str


def parseACL(text: str, path: str = "<acl>") -> list[Rule]:
    """
    The rules in C{text}, in order; C{path} only names the file in errors.

    @raise ACLError: for the first bad line, with its number.
    """
    rules = []
    # Lines are counted as editors count them: split on newlines only, not on the
    # other line boundaries that str.splitlines knows (\x0c, \u2028, ...).
    for number, line in enumerate(text.split("\n"), 1):
        fields = line.split()
        for index, field in enumerate(fields):
            if field.startswith(_COMMENT):
                del fields[index:]
                break
        if not fields:
            continue
        if len(fields) != 3:
            raise ACLError(f"{path}:{number}: {_EXPECTED}, not {len(fields)} field(s)")
        user, action, pattern = fields
        if action not in ACTIONS:
            raise ACLError(f"{path}:{number}: unknown action {action!r}, {_EXPECTED}")
        problem = checkPattern(pattern)
        if problem is not None:
            raise ACLError(f"{path}:{number}: bad pattern {pattern!r}: {problem}")
        rules.append(Rule(user, action, pattern))
    return rules


def readACL(path: str) -> list[Rule]:
    """
    The rules in the file at C{path} (UTF-8, a byte order mark allowed).

    @raise ACLError: when the file cannot be read or has a bad line.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise ACLError(f"cannot read ACL file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ACLError(f"cannot read ACL file {path}: not UTF-8 (byte {e.start})") from e
    return parseACL(text, path)


class ACL:
    """
    Decisions over a set of rules.

    An ACL never changes (a reloaded file makes a new one), so L{mayPublish}, which
    runs for every published message, remembers its answers.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._publishers: TopicTrie[str] = TopicTrie()
        """The users (L{EVERYONE} included) filed under their publish patterns."""
        self._subscribe: dict[str, list[str]] = {}
        """Each user's (and L{EVERYONE}'s) subscribe patterns."""
        self._published: dict[tuple[str, str], bool] = {}
        """L{mayPublish}'s answers, forgotten all at once when there are too many."""
        for rule in self.rules:
            if rule.action == PUBLISH:
                self._publishers.add(rule.pattern, rule.user)
            elif rule.action == SUBSCRIBE:
                self._subscribe.setdefault(rule.user, []).append(rule.pattern)
            else:
                raise ValueError(f"unknown action {rule.action!r} in {rule!r}")

    def __repr__(self) -> str:
        return f"<ACL with {len(self.rules)} rule(s)>"

    def mayPublish(self, user: str, topic: str) -> bool:
        """
        Whether C{user} may publish to C{topic}: some C{publish} rule of theirs or
        of L{EVERYONE} matches it.
        """
        key = (user, topic)
        allowed = self._published.get(key)
        if allowed is None:
            users = self._publishers.match(topic)
            allowed = user in users or EVERYONE in users
            if len(self._published) >= _PUBLISH_CACHE_SIZE:
                self._published.clear()
            self._published[key] = allowed
        return allowed

    def maySubscribe(self, user: str, pattern: str) -> bool:
        """
        Whether C{user} may subscribe to C{pattern} (a topic or a wildcard
        pattern): some C{subscribe} rule of theirs or of L{EVERYONE} covers it,
        so that nothing the subscription could receive is outside the rules.
        """
        for owner in (user, EVERYONE):
            for allowed in self._subscribe.get(owner, ()):
                if covers(allowed, pattern):
                    return True
        return False


class ACLFile:
    """
    The ACL in a file, re-read when the file changes (checked every C{interval}
    seconds by a L{LoopingCall} on C{clock}, once L{start}ed), telling listeners:
    operators edit permissions without restarting the daemons, and the daemons
    can review what is already subscribed under the new rules.

    @ivar acl: the current decisions.
    """

    log = Logger()

    def __init__(self, path: str, clock: IReactorTime, interval: float = 1.0) -> None:
        """
        Read the file at once.

        @raise ACLError: when it cannot be read or has a bad line: a daemon must not
            start with permissions other than the operator wrote.
        """
        self.path = path
        self.interval = interval
        self._clock = clock
        self._listeners: list[Callable[[ACL], None]] = []
        self._loop: LoopingCall | None = None
        self._lastError: str | None = None
        """The last read error logged, so that a broken file is reported once, not every interval."""
        self._signature = self._stat()
        self.acl = ACL(readACL(path))
        self.log.info("ACL file {path} loaded: {count} rule(s)", path=path, count=len(self.acl.rules))

    def _stat(self) -> tuple[int, int, int]:
        """
        What tells a changed file: replaced (inode), rewritten (time), or grown or
        cut in the same clock tick (size).
        """
        try:
            stat = os.stat(self.path)
        except OSError as e:
            raise ACLError(f"cannot read ACL file {self.path}: {e.strerror or e}") from e
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def addListener(self, listener: Callable[[ACL], None]) -> None:
        """
        Call C{listener} with the new L{ACL} after each successful reload (not with
        the one loaded at first, which is L{acl}).
        """
        self._listeners.append(listener)

    def start(self) -> None:
        """
        Check the file every C{interval} seconds from now on (the first check one
        interval from now); nothing if already started.
        """
        if self._loop is not None and self._loop.running:
            return
        loop = self._loop = LoopingCall(self._check)
        loop.clock = self._clock
        loop.start(self.interval, now=False).addErrback(self._loopFailed)

    def stop(self) -> None:
        """
        Stop checking the file; safe when not started or already stopped.
        """
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def check(self) -> bool:
        """
        Check the file now, and reload it if it changed.

        @return: whether a new ACL was loaded.  A file that cannot be read or has a
            bad line leaves L{acl} as it was; the error is logged once for as long
            as it stays the same, and the file is tried again at the next check.
        """
        try:
            signature = self._stat()
            if signature == self._signature:
                self._lastError = None
                return False
            acl = ACL(readACL(self.path))
        except ACLError as e:
            if str(e) != self._lastError:
                self._lastError = str(e)
                self.log.error("keeping the ACL rules loaded before: {error}", error=e, path=self.path)
            return False
        # The signature was taken before reading: a change made while reading shows
        # as a new signature at the next check, and the file is read again.
        self._signature = signature
        self._lastError = None
        self.acl = acl
        self.log.info("ACL file {path} reloaded: {count} rule(s)", path=self.path, count=len(acl.rules))
        for listener in list(self._listeners):
            try:
                listener(acl)
            except Exception:  # noqa: BLE001 -- logged; the other listeners are still told
                self.log.failure("ACL listener {listener!r} failed", listener=listener)
        return True

    def _check(self) -> None:
        # A LoopingCall stops for good at the first exception: never let one out.
        try:
            self.check()
        except Exception:  # noqa: BLE001 -- a bug must not stop the watching for good
            self.log.failure("checking ACL file {path} failed", path=self.path)

    def _loopFailed(self, failure: Failure) -> None:
        self.log.failure("watching ACL file {path} stopped", failure, path=self.path)
