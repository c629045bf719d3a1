"""
A delivery checker for fault-injection tests, and the clients that feed it.

The checker is told everything the test's clients do: every message a publishing
client sends (publisher name, sequence number, topic), every C{Ack} and C{Error} it
gets back, every resend, and every message each subscribing client receives.  It
then says, per subscribing client (and per consumer group whose stream is shared by
several clients), what went wrong:

  - B{lost}: acknowledged to the publishing client, on a topic the client was
    subscribed to the whole time, and never received (for a group: by no member);
  - B{unexpected}: received but never sent (or on a topic other than the one it was
    sent on);
  - B{duplicates}: received more than once; those of a message its publishing client
    sent again after a reconnect are I{explained}, the others I{unexplained};
  - B{order violations}: per publisher, a message received for the first time after
    one with a higher sequence number (messages that were resent are left out: a
    resend legitimately comes after what the old connection got through).

    checker = DeliveryChecker()
    await SubscribingClient.open(clients, checker, "s1", subscriber.port, ["t0", "t1"])
    publishers = [PublishingClient(checker, clients, f"p{n}", publisher.port, ["t0", "t1"], 1000)
                  for n in range(3)]
    running = publishAll(publishers)       # (and self.addCleanup(stopAll, publishers))
    ...                                    # the fault
    await running
    await checker.settle(30)               # every client has what it is owed, and quiet
    checker.show(self)                     # prints FIGURES <test>: {...}
    checker.assertClean(self)

A message's C{Content} is C{"<publisher> <sequence> <padding>"}, so the checker can
tell any received message apart without relying on msgqueue's offsets.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from twisted.internet import reactor, task
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import Clients, waitFor, withTimeout
from wsqueue.client import ClientProtocol

Key = tuple[str, int]
"""A message's identity: (publisher name, sequence number)."""

log = Logger()


def contentFor(publisher: str, seq: int, padding: int = 0) -> str:
    """
    The C{Content} of message C{seq} of C{publisher}, padded with C{padding} characters.
    """
    return f"{publisher} {seq} " + "x" * padding


def parseContent(content: object) -> Key | None:
    """
    The (publisher, sequence number) that L{contentFor} put in C{content}, or L{None}.
    """
    if not isinstance(content, str):
        return None
    parts = content.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


@dataclass
class Watcher:
    """
    One subscribing client as the checker sees it.

    @ivar expects: which acknowledged messages on its topics it must receive (a client
        that joined late, or after a restart, is owed only part of the stream).
    @ivar partial: it was not subscribed the whole time (cut off by a crash): its
        losses are not counted, everything else is.
    @ivar disconnected: its connection closed (reported; its losses still count
        unless it is also C{partial}).
    @ivar received: what it received, in order: (key or None, topic).
    @ivar keys: the distinct messages it received.
    """

    name: str
    topics: frozenset[str]
    group: str | None = None
    expects: Callable[[Key], bool] | None = None
    partial: bool = False
    disconnected: bool = False
    received: list[tuple[Key | None, str]] = field(default_factory=list)
    keys: set[Key] = field(default_factory=set)

    def owes(self, key: Key, topic: str) -> bool:
        return topic in self.topics and (self.expects is None or self.expects(key))


class DeliveryChecker:
    """
    Records what the clients of a test sent and received, and reports the figures.
    """

    def __init__(self) -> None:
        self.topics: dict[Key, str] = {}
        self.acked: set[Key] = set()
        self.errors: dict[Key, str] = {}
        self.resent: Counter[Key] = Counter()
        self.watchers: dict[str, Watcher] = {}
        self.lastReceipt = reactor.seconds()

    # -- the publishing side --------------------------------------------------------

    def sent(self, publisher: str, seq: int, topic: str) -> None:
        self.topics[publisher, seq] = topic

    def wasResent(self, publisher: str, seq: int) -> None:
        self.resent[publisher, seq] += 1

    def answered(self, publisher: str, frame: dict) -> Key | None:
        """
        Record a publishing client's C{{"Ack": seq}} or C{{"Error": reason, "Id": seq}};
        return the message it answers (L{None} for an error without an Id).
        """
        if "Ack" in frame:
            key = (publisher, frame["Ack"])
            self.acked.add(key)
            return key
        key = (publisher, frame.get("Id"))
        self.errors[key] = str(frame.get("Error"))
        return key if frame.get("Id") is not None else None

    @property
    def unanswered(self) -> int:
        return len(self.topics.keys() - self.acked - self.errors.keys())

    # -- the subscribing side -------------------------------------------------------

    def watch(
        self, name: str, topics: Iterable[str], group: str | None = None,
        expects: Callable[[Key], bool] | None = None,
    ) -> Watcher:
        """
        Start recording subscribing client C{name}, subscribed to C{topics} from now on.

        @param group: a label for clients that share one consumer group's stream
            (subscriber daemons of the same C{--group}): losses and duplicates are
            then counted for the group as a whole.
        @param expects: restricts which acknowledged messages it is owed.
        """
        assert name not in self.watchers, f"subscribing client {name} is already watched"
        watcher = Watcher(name, frozenset(topics), group, expects)
        self.watchers[name] = watcher
        return watcher

    def cutOff(self, name: str) -> None:
        """
        Client C{name} lost its subscription (a crash): do not count its losses.
        """
        self.watchers[name].partial = True

    def disconnected(self, name: str) -> None:
        self.watchers[name].disconnected = True

    def received(self, name: str, frame: dict) -> None:
        watcher = self.watchers[name]
        key = parseContent(frame.get("Content"))
        watcher.received.append((key, frame.get("Topic")))
        if key is not None:
            watcher.keys.add(key)
        self.lastReceipt = reactor.seconds()

    # -- figures ---------------------------------------------------------------------

    def _owed(self, watcher: Watcher) -> set[Key]:
        return {key for key in self.acked if watcher.owes(key, self.topics.get(key, ""))}

    def _receipts(self, watcher: Watcher) -> dict:
        """
        What one client received: unexpected messages, duplicates and order violations.
        """
        counts: Counter[Key] = Counter()
        highest: dict[str, int] = {}
        unexpected = orderViolations = outside = 0
        for key, topic in watcher.received:
            if key is None or key not in self.topics or self.topics[key] != topic or topic not in watcher.topics:
                unexpected += 1
                continue
            counts[key] += 1
            if counts[key] > 1:
                continue
            if watcher.expects is not None and not watcher.expects(key):
                outside += 1
            publisher, seq = key
            if seq < highest.get(publisher, 0) and key not in self.resent:
                orderViolations += 1
            highest[publisher] = max(seq, highest.get(publisher, 0))
        return {"counts": counts, "unexpected": unexpected, "orderViolations": orderViolations, "outside": outside}

    @staticmethod
    def _duplicates(counts: Counter[Key], resent: Counter[Key]) -> tuple[int, int]:
        duplicates = explained = 0
        for key, count in counts.items():
            if count > 1:
                duplicates += count - 1
                if key in resent:
                    explained += count - 1
        return duplicates, explained

    def _figures(self, owed: set[Key] | None, counts: Counter[Key], receipts: list[dict], received: int) -> dict:
        duplicates, explained = self._duplicates(counts, self.resent)
        lost = sorted(owed - counts.keys()) if owed is not None else []
        return {
            "received": received,
            "owed": len(owed) if owed is not None else None,
            "lost": len(lost) if owed is not None else None,
            "unexpected": sum(r["unexpected"] for r in receipts),
            "duplicates": duplicates,
            "explainedDuplicates": explained,
            "unexplainedDuplicates": duplicates - explained,
            "orderViolations": sum(r["orderViolations"] for r in receipts),
            "notOwed": sum(r["outside"] for r in receipts),
            "deliveredDespiteError": len(counts.keys() & self.errors.keys()),
            "lostSample": [f"{p} {s}" for p, s in lost[:5]],
        }

    def report(self) -> dict:
        """
        Every figure: the publishing side (C{sent}, C{acked}, C{errors}, C{unanswered},
        C{resent}), then under C{clients} each subscribing client and under C{groups}
        each group: C{received} (frames), C{owed} (acknowledged messages it must get;
        L{None} when not counted: a group member, a client cut off), C{lost},
        C{unexpected}, C{duplicates} = C{explainedDuplicates} +
        C{unexplainedDuplicates}, C{orderViolations}, C{notOwed} (received, sent, but
        outside what it is owed: e.g. a redelivery after a restart),
        C{deliveredDespiteError} (its publishing client was told it was not stored)
        and C{lostSample}.
        """
        figures: dict = {
            "sent": len(self.topics),
            "acked": len(self.acked),
            "errors": len(self.errors),
            "unanswered": self.unanswered,
            "resent": sum(self.resent.values()),
            "clients": {},
            "groups": {},
        }
        groups: dict[str, list[tuple[Watcher, dict]]] = {}
        for name, watcher in self.watchers.items():
            receipts = self._receipts(watcher)
            owed = None if watcher.partial or watcher.group is not None else self._owed(watcher)
            client = self._figures(owed, receipts["counts"], [receipts], len(watcher.received))
            if watcher.partial:
                client["cutOff"] = True
            if watcher.disconnected:
                client["disconnected"] = True
            figures["clients"][name] = client
            if watcher.group is not None:
                groups.setdefault(watcher.group, []).append((watcher, receipts))
        for group, members in groups.items():
            counts: Counter[Key] = Counter()
            for _, receipts in members:
                counts.update(receipts["counts"])
            owed = None if any(w.partial for w, _ in members) else set().union(*(self._owed(w) for w, _ in members))
            shares = {w.name: len(w.received) for w, _ in members}
            groupFigures = self._figures(owed, counts, [r for _, r in members], sum(shares.values()))
            groupFigures["shares"] = shares
            figures["groups"][group] = groupFigures
        return figures

    def problems(self, figures: dict | None = None) -> list[str]:
        """
        What L{assertClean} fails on, one line each.
        """
        figures = figures or self.report()
        found = []
        for kind, entries in (("client", figures["clients"]), ("group", figures["groups"])):
            for name, f in entries.items():
                for figure in ("lost", "unexpected", "unexplainedDuplicates", "orderViolations"):
                    if f[figure]:
                        found.append(f"{kind} {name}: {figure} = {f[figure]}")
        return found

    def assertClean(self, testCase: TestCase, figures: dict | None = None) -> None:
        """
        Fail C{testCase}, quoting the figures, if any client or group lost a message,
        got an unexpected one, an unexplained duplicate, or one out of order.
        """
        figures = figures or self.report()
        found = self.problems(figures)
        if found:
            details = json.dumps(figures, indent=1, sort_keys=True)
            testCase.fail("delivery problems: " + "; ".join(found) + "\n" + details)

    def show(self, testCase: TestCase, figures: dict | None = None, **extra) -> dict:
        """
        Print the figures (and C{extra} ones) on one line for the test's output, log
        them too; return them.
        """
        figures = dict(figures or self.report(), **extra)
        line = json.dumps(figures, sort_keys=True)
        print(f"\nFIGURES {testCase.id().rsplit('.', 1)[-1]}: {line}")
        log.info("figures for {test}: {figures}", test=testCase.id(), figures=line)
        return figures

    # -- waiting ---------------------------------------------------------------------

    def complete(self) -> bool:
        """
        Whether every client still subscribed has everything it is owed.
        """
        for watcher in self.watchers.values():
            if watcher.partial:
                continue
            if watcher.group is None and not self._owed(watcher) <= watcher.keys:
                return False
        for group in {w.group for w in self.watchers.values() if w.group is not None}:
            members = [w for w in self.watchers.values() if w.group == group]
            if any(w.partial for w in members):
                continue
            owed = set().union(*(self._owed(w) for w in members))
            if not owed <= set().union(*(w.keys for w in members)):
                return False
        return True

    def settle(self, timeout: float, quiet: float = 0.5) -> Deferred[bool]:
        """
        Wait until every client has what it is owed (or C{timeout} passes), then until
        nothing has arrived for C{quiet} seconds, so late duplicates are counted too.
        Fire with whether it was complete; never fail (L{assertClean} does, with the figures).
        """

        async def wait() -> bool:
            try:
                await waitFor(self.complete, timeout, interval=0.1, what="every subscribing client to be complete")
                done = True
            except AssertionError:
                done = False
            try:
                await waitFor(lambda: reactor.seconds() - self.lastReceipt >= quiet, timeout, interval=0.05,
                              what="the subscribing clients to go quiet")
            except AssertionError:
                pass
            return done

        return Deferred.fromCoroutine(wait())


class PublishingClient:
    """
    Publishes C{count} messages with Ids C{1..count} on C{/publish}, keeping at most
    C{window} of them unanswered; records all of it in the checker.

    When its connection closes it reconnects (for up to C{reconnectWithin} seconds)
    and sends again every message it has had no answer for: those are the resends
    the checker uses to explain duplicates.  An C{Error} is an answer: that message
    is not sent again.
    """

    def __init__(
        self, checker: DeliveryChecker, clients: Clients, name: str, port: int, topics: Sequence[str],
        count: int, window: int = 200, padding: int = 100, reconnectWithin: float = 30.0,
    ) -> None:
        self.checker = checker
        self.clients = clients
        self.name = name
        self.port = port
        self.topics = list(topics)
        self.count = count
        self.window = window
        self.padding = padding
        self.reconnectWithin = reconnectWithin
        self.next = 1
        self.unanswered: dict[int, bytes] = {}
        self.connections = 0
        self.connection: ClientProtocol | None = None
        self.stopped = False
        self.done: Deferred | None = None
        self.failure: Failure | None = None
        self._retry: Deferred | None = None

    def frameFor(self, seq: int) -> bytes:
        topic = self.topics[seq % len(self.topics)]
        self.checker.sent(self.name, seq, topic)
        message = {"Topic": topic, "Content": contentFor(self.name, seq, self.padding), "Id": seq}
        return json.dumps(message).encode("utf-8")

    def run(self) -> Deferred[PublishingClient]:
        """
        Publish everything; fire once every message has an Ack or an Error.
        """
        self.done = Deferred.fromCoroutine(self._run())
        self.done.addErrback(self._failed)
        return self.done

    def _failed(self, failure: Failure) -> Failure:
        self.failure = failure
        return failure

    def stop(self) -> None:
        """
        Give up (the test is over or failed): drop the connection and stop
        reconnecting; L{run}'s Deferred fires with L{None} if it had not fired.
        """
        self.stopped = True
        if self._retry is not None:
            self._retry.cancel()
        if self.connection is not None and not self.connection.closed.called:
            self.connection.dropConnection(abort=True)

    async def _run(self) -> PublishingClient | None:
        connection = await self._connect()
        while self.next <= self.count or self.unanswered:
            while self.next <= self.count and len(self.unanswered) < self.window:
                frame = self.unanswered[self.next] = self.frameFor(self.next)
                connection.sendMessage(frame)
                self.next += 1
            payload = await connection.frames.get()
            if payload is None and self.stopped:
                return None
            if payload is None:
                connection = await self._connect()
                if connection is None:
                    return None
                for seq, frame in self.unanswered.items():
                    self.checker.wasResent(self.name, seq)
                    connection.sendMessage(frame)
                continue
            key = self.checker.answered(self.name, json.loads(payload))
            if key is not None:
                self.unanswered.pop(key[1], None)
        connection.sendClose(1000)
        return self

    async def _connect(self) -> ClientProtocol | None:
        """
        A new connection, retried every 0.2 s until C{reconnectWithin} has passed;
        L{None} once L{stop} was called.
        """
        deadline = reactor.seconds() + self.reconnectWithin
        while not self.stopped:
            try:
                self.connection = await self.clients.connect(self.port, "/publish")
            except Exception as e:  # noqa: BLE001 -- refused, reset, handshake timeout: all mean "not yet"
                if reactor.seconds() > deadline:
                    raise AssertionError(f"publishing client {self.name} could not reconnect within "
                                         f"{self.reconnectWithin} s: {e}") from None
                self._retry = task.deferLater(reactor, 0.2, lambda: None)
                try:
                    await self._retry
                except CancelledError:
                    return None
                finally:
                    self._retry = None
                continue
            self.connections += 1
            return self.connection
        return None


def publishAll(publishers: Sequence[PublishingClient]) -> Deferred[list]:
    """
    Run every publishing client; fire once all have an answer for every message, or
    fail with the first one that failed.
    """
    d = DeferredList([p.run() for p in publishers], fireOnOneErrback=True, consumeErrors=True)
    return d.addErrback(lambda failure: failure.value.subFailure)


def stopAll(publishers: Sequence[PublishingClient]) -> None:
    """
    Stop every publishing client (a test's cleanup: none keeps reconnecting after it).
    """
    for publisher in publishers:
        publisher.stop()


class SubscribingClient:
    """
    A client on C{/subscribe} whose messages all go to the checker.

    @ivar closed: fires with (code, reason) when its connection closes.  Its losses
        still count: a test whose fault cuts it off says so with
        L{DeliveryChecker.cutOff}.
    """

    def __init__(self, checker: DeliveryChecker, name: str, connection: ClientProtocol) -> None:
        self.checker = checker
        self.name = name
        self.connection = connection
        self.errors: list[dict] = []
        self._waiting: dict[object, Deferred] = {}
        self.closed: Deferred[tuple] = Deferred()
        Deferred.fromCoroutine(self._read())

    @classmethod
    async def open(
        cls, clients: Clients, checker: DeliveryChecker, name: str, port: int, topics: Sequence[str],
        group: str | None = None, expects: Callable[[Key], bool] | None = None,
    ) -> SubscribingClient:
        """
        Connect, subscribe to C{topics} and wait for the subscriptions' C{Ack}s.
        """
        connection = await clients.connect(port, "/subscribe")
        checker.watch(name, topics, group, expects)
        client = cls(checker, name, connection)
        for topic in topics:
            await client.subscribe(topic)
        return client

    async def subscribe(self, topic: str) -> None:
        requestId = f"sub {topic}"
        answer = self._waiting[requestId] = Deferred()
        self.connection.sendMessage(json.dumps({"Topic": topic, "Content": "sub", "Id": requestId}).encode("utf-8"))
        reply = await withTimeout(answer, 10, f"{self.name} subscribing to {topic}")
        assert reply == {"Ack": requestId}, f"{self.name} subscribing to {topic}: {reply!r}"

    async def _read(self) -> None:
        while (payload := await self.connection.frames.get()) is not None:
            frame = json.loads(payload)
            if "Content" in frame:
                self.checker.received(self.name, frame)
            elif (requestId := frame.get("Ack", frame.get("Id"))) in self._waiting:
                self._waiting.pop(requestId).callback(frame)
            else:
                self.errors.append(frame)
        self.checker.disconnected(self.name)
        self.closed.callback(await self.connection.closed)
