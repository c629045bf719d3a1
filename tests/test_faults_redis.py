"""
Fault injection on Redis (#10): real C{twistd} daemons, several msgqueue daemons
serving one queue in a real C{redis-server}, publishers and subscribers given every
msgqueue with C{--queue}, and every message accounted for by
L{tests.checker.DeliveryChecker}.  Each scenario prints its figures on a
C{FIGURES <test>: {...}} line, with the totals C{lost} and C{duplicates} on top.

  - two msgqueue daemons, two publishers, three subscribers (two in one group):
    exactly once per group, in order per publisher;
  - one msgqueue killed (SIGKILL) mid-stream, with messages stored and not
    acknowledged, and entries handed out and not acknowledged: publishers and
    subscribers move to the other by themselves;
  - redis-server killed (SIGKILL) and restarted on its append-only file;
  - a Sentinel fail-over: the master killed, its replica promoted.

Each ends once every group has acknowledged everything (read from Redis), so that
a redelivery after the ack wait (C{--ack-wait 2s} here) is counted too.  Such a
redelivery of what a dead msgqueue had taken for its consumer comes after newer
messages: order is checked in the fault-free scenario only, and reported
(C{orderViolations}) in the others.  Nothing here sleeps to synchronise: every wait
is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.checker import DeliveryChecker, Key, PublishingClient, SubscribingClient, parseContent
from tests.daemons import Daemon
from tests.helpers import Clients, nextJSON, waitFor
from tests.redisserver import RedisServer
from tests.test_faults import resends, startPublishing, unreadBytes, waitForPublishers

TOPICS = ("t0", "t1")
ACK_WAIT = "2s"
"""msgqueue's --ack-wait in the fault scenarios: what a dead msgqueue's consumer
held goes back to its group after this long."""
STORE_FAILED = "storing pushed messages failed"
"""What msgqueue logs when it cannot store what is pushed (see L{wsqueue.msgqueue})."""
MASTER = "wsqueue-master"
"""The master's name for the Sentinels."""
KEYS = "wsqueue:{msgqueue}:"
"""The prefix of the queue's keys in Redis (see L{wsqueue.store.redis})."""


def gathered(waiting: Sequence[Deferred]) -> Deferred[list]:
    """
    Fire with every result once all have fired, or fail with the first failure.
    """
    return gatherResults(list(waiting), consumeErrors=True).addErrback(lambda failure: failure.value.subFailure)


def startRedis(testCase: TestCase, **kwargs) -> RedisServer:
    """
    A redis-server with its folder (data and C{redis.log}) in the test's temporary
    folder, kept after the test for its log; killed when the test ends.
    """
    folder = os.path.abspath(testCase.mktemp())
    os.makedirs(folder)
    server = RedisServer(folder=folder, **kwargs).start()
    testCase.addCleanup(server.kill)
    return server


@dataclass
class SharedQueue:
    """
    msgqueue daemons on one Redis store, and the publishers and subscribers linked to them.
    """

    msgqueues: list[Daemon]
    publishers: list[Daemon]
    subscribers: list[Daemon]


async def startSharedQueue(
    testCase: TestCase, store: str, msgqueues: int = 2,
    publishers: Sequence[Sequence[int]] = ((0, 1), (1, 0)),
    subscribers: Sequence[tuple[str, Sequence[int]]] = (("a", (0, 1)), ("b", (1, 0))),
    msgqueueArgs: Sequence[str] = (),
) -> SharedQueue:
    """
    C{msgqueues} msgqueue daemons on C{store}; then one publisher per entry of
    C{publishers} and one subscriber per entry of C{subscribers} (its group), each
    given the msgqueues in the order its entry says (indexes) with C{--queue}.
    Fire once every msgqueue is ready (its Redis store open) and every link is open.
    """
    queues = [
        Daemon(testCase, "wsqueue-msgqueue", ("--store", store, *msgqueueArgs), name=f"msgqueue{n}")
        for n in range(msgqueues)
    ]
    await gathered([queue.start().addCallback(lambda daemon: daemon.waitForEvents("ready")) for queue in queues])

    def queueArguments(order: Sequence[int]) -> tuple[str, ...]:
        return tuple(argument for n in order for argument in ("--queue", queues[n].url))

    pubs = [
        Daemon(testCase, "wsqueue-publisher", queueArguments(order), name=f"publisher{n}")
        for n, order in enumerate(publishers)
    ]
    subs = [
        Daemon(testCase, "wsqueue-subscriber", ("--group", group, *queueArguments(order)), name=f"subscriber{n}")
        for n, (group, order) in enumerate(subscribers)
    ]
    await gathered([stage.start().addCallback(lambda daemon: daemon.waitForLinks()) for stage in pubs + subs])
    return SharedQueue(queues, pubs, subs)


def linkPorts(stage: Daemon, since: int = 0) -> list[int | None]:
    """
    The msgqueue ports of the links C{stage} opened after event mark C{since}, in order.
    """
    return [urlsplit(event["url"]).port for event in stage.history[since:] if event.get("event") == "link-open"]


def totals(figures: dict) -> dict:
    """
    Losses and duplicates of every subscribing client not in a group, and of every group.
    """
    counted = [f for f in figures["clients"].values() if f["owed"] is not None] + list(figures["groups"].values())
    return {
        "lost": sum(f["lost"] for f in counted),
        "duplicates": sum(f["duplicates"] for f in counted),
    }


def pendingEntries(server: RedisServer, groups: Sequence[str]) -> dict[str, int]:
    """
    How many entries each group has delivered and not acknowledged, read from Redis.
    """
    return {group: server.command("HLEN", f"{KEYS}gp:{group}") for group in groups}


async def freezeStoredNotAcked(
    daemon: Daemon, redis: RedisServer, producer: str, checker: DeliveryChecker, clients: Sequence[str],
    timeout: float,
) -> dict:
    """
    Leave msgqueue C{daemon} frozen (SIGSTOP) with messages of C{producer} (the
    publisher whose publishing clients are C{clients}) stored in Redis and never
    acknowledged: Redis is frozen until commands wait unread in its sockets, then
    C{daemon}, then Redis is thawed: it stores what C{daemon} had sent, and the
    replies wait in C{daemon}'s socket.  Checked once the Acks C{daemon} had sent
    before have all arrived (none for 0.3 s); tried again if Redis held none of
    its appends.  Return how many messages and how many attempts it took.
    """
    deadline = reactor.seconds() + timeout
    attempts = 0
    assert redis.process is not None
    while True:
        attempts += 1
        redis.process.send_signal(signal.SIGSTOP)
        await waitFor(lambda: unreadBytes(redis.port) >= 4096, max(deadline - reactor.seconds(), 0.1),
                      interval=0.002, what="commands waiting for Redis")
        daemon.kill(signal.SIGSTOP)
        redis.process.send_signal(signal.SIGCONT)
        await quietFor(lambda: ackedOf(checker, clients), 0.3, timeout=10)
        stored = int(redis.command("HGET", f"{KEYS}producers", producer) or 0)
        storedNeverAcked = stored - ackedOf(checker, clients)
        if storedNeverAcked > 0:
            return {"storedNeverAcked": storedNeverAcked, "freezeAttempts": attempts}
        if reactor.seconds() > deadline:
            raise AssertionError(f"could not freeze {daemon.name} with messages stored and not acknowledged "
                                 f"within {timeout} s ({attempts} attempts)")
        daemon.kill(signal.SIGCONT)


def heldEntries(redis: RedisServer, group: str) -> set[Key | None]:
    """
    The messages C{group} has delivered and not acknowledged, read from Redis.
    """
    offsets = {int(offset) for offset in redis.command("HKEYS", f"{KEYS}gp:{group}")}
    if not offsets:
        return set()
    entries = redis.command("XRANGE", f"{KEYS}stream", f"{min(offsets)}-0", f"{max(offsets)}-0")
    return {
        parseContent(dict(zip(fields[::2], fields[1::2])).get("c"))
        for streamId, fields in entries
        if int(streamId.split("-")[0]) in offsets
    }


def quietFor(count: Callable[[], int], period: float, timeout: float) -> Deferred:
    """
    Fire once C{count()} has not changed for C{period} seconds.
    """
    seen = {"value": count(), "since": reactor.seconds()}

    def quiet() -> bool:
        value = count()
        if value != seen["value"]:
            seen.update(value=value, since=reactor.seconds())
        return reactor.seconds() - seen["since"] >= period

    return waitFor(quiet, timeout, interval=0.02, what=f"no change for {period} s")


def producerOf(publisher: Daemon) -> str:
    """
    The producer name the publisher gives msgqueue (in its link's URL).
    """
    [url] = [event["url"] for event in publisher.history if event.get("event") == "link-open"][:1]
    return parse_qs(urlsplit(url).query)["producer"][0]


def deliveryProblems(figures: dict, order: bool) -> list[str]:
    """
    Every loss, unexpected message and duplicate (explained or not: no publishing
    client here reconnects, so none is expected), and with C{order}, every order
    violation; one line each.
    """
    checked = ("lost", "unexpected", "duplicates") + (("orderViolations",) if order else ())
    return [
        f"{kind} {name}: {figure} = {f[figure]}"
        for kind, entries in (("client", figures["clients"]), ("group", figures["groups"]))
        for name, f in entries.items()
        for figure in checked
        if f[figure]
    ]


async def finishStream(
    testCase: TestCase, checker: DeliveryChecker, publishers: Sequence[PublishingClient], timeout: float,
    order: bool, pending: Callable[[], dict[str, int]], extra: Callable[[], dict] = dict,
) -> dict:
    """
    Wait for the publishing clients to have an answer for every message, then for
    the subscribing clients to have what they are owed, then for every group to
    have acknowledged everything (C{pending()}, read from Redis: what a dead
    consumer held comes back after the ack wait, and a redelivery the subscriber
    failed to recognise would arrive then), and for the clients to go quiet again;
    print the figures (also when something failed) and check them (see
    L{deliveryProblems}).
    """
    problem = await waitForPublishers(publishers, timeout)
    await checker.settle(30)
    # Not an error here if they never drain: the figures say so, checked below.
    await waitFor(lambda: not any(pending().values()), 20, interval=0.1,
                  what="every group to acknowledge everything").addErrback(lambda _: None)
    await checker.settle(30)
    figures = checker.report()
    figures = checker.show(testCase, figures, **totals(figures), **extra(), pendingAtEnd=pending())
    if problem is not None:
        testCase.fail(problem)
    found = deliveryProblems(figures, order)
    found += [f"group {group}: {count} entries never acknowledged"
              for group, count in figures["pendingAtEnd"].items() if count]
    if found:
        testCase.fail("delivery problems: " + "; ".join(found) + "\n" + json.dumps(figures, indent=1, sort_keys=True))
    return figures


async def duringFault(testCase: TestCase, checker: DeliveryChecker, facts: dict, fault: Coroutine) -> None:
    """
    Run a test's fault (C{fault}, which records what it did in C{facts}); if it
    fails (a daemon that did not recover, a deadline), print the figures so far
    and C{facts} first.
    """
    try:
        await fault
    except BaseException:
        figures = checker.report()
        checker.show(testCase, figures, **totals(figures), **facts, failedDuringFault=True)
        raise


async def publishUntilAcked(clients: Clients, port: int, timeout: float) -> int:
    """
    Publish probe messages (topic C{probe}, which no client here subscribes to)
    through the publisher on C{port}, one at a time, 0.2 s apart, until one is
    acknowledged; return how many were refused first.  Fail at the deadline.
    """
    connection = await clients.connect(port, "/publish")
    deadline = reactor.seconds() + timeout
    refused: list[dict] = []
    while True:
        probe = {"Topic": "probe", "Content": f"probe {len(refused) + 1}", "Id": len(refused) + 1}
        connection.sendMessage(json.dumps(probe).encode("utf-8"))
        reply = await nextJSON(connection, timeout=15)
        if reply.get("Ack") == probe["Id"]:
            connection.sendClose(1000)
            return len(refused)
        refused.append(reply)
        if reactor.seconds() > deadline:
            raise AssertionError(f"no probe acknowledged within {timeout} s; the last answer: {reply!r}")
        await task.deferLater(reactor, 0.2, lambda: None)


def errorsOf(checker: DeliveryChecker, names: Sequence[str]) -> int:
    return sum(1 for publisher, _ in checker.errors if publisher in names)


def ackedOf(checker: DeliveryChecker, names: Sequence[str]) -> int:
    return sum(1 for publisher, _ in checker.acked if publisher in names)


class SharedQueueTests(TestCase):
    """
    Two msgqueue daemons on one Redis serve one queue.
    """

    timeout = 120

    async def test_twoOfEach(self) -> None:
        """
        Two msgqueue, two publisher and three subscriber daemons (two in group g1,
        one in g2), their links spread over both msgqueues: every message published
        with an Id through either publisher is acknowledged and reaches group g1
        once (through one of its two subscribers, each taking a share) and each
        client of g2 once, in order per publisher.
        """
        redis = startRedis(self)
        shared = await startSharedQueue(
            self, redis.url, publishers=((0, 1), (1, 0)),
            subscribers=(("g1", (0, 1)), ("g1", (1, 0)), ("g2", (1, 0))),
        )
        ports = [queue.port for queue in shared.msgqueues]
        stages = shared.publishers + shared.subscribers
        self.assertEqual(
            {stage.name: linkPorts(stage) for stage in stages},
            {stage.name: [ports[n]] for stage, n in zip(stages, (0, 1, 0, 1, 1))},
            "the links did not go to the first msgqueue each was given",
        )
        clients = Clients(self)
        checker = DeliveryChecker()
        one, two, other = shared.subscribers
        await SubscribingClient.open(clients, checker, "g1 on subscriber0", one.port, TOPICS, group="g1")
        await SubscribingClient.open(clients, checker, "g1 on subscriber1", two.port, TOPICS, group="g1")
        await SubscribingClient.open(clients, checker, "g2 both", other.port, TOPICS)
        await SubscribingClient.open(clients, checker, "g2 t0", other.port, ["t0"])
        count = 2000
        publishers = [
            PublishingClient(checker, clients, f"p{n}", publisher.port, TOPICS, count)
            for n, publisher in enumerate(shared.publishers)
        ]
        startPublishing(self, publishers)
        figures = await finishStream(self, checker, publishers, 60, order=True,
                                     pending=lambda: pendingEntries(redis, ["g1", "g2"]))
        sent = count * len(publishers)
        self.assertEqual((figures["sent"], figures["acked"], figures["errors"]), (sent, sent, 0))
        self.assertEqual(figures["groups"]["g1"]["received"], sent)
        self.assertEqual(
            (figures["clients"]["g2 both"]["received"], figures["clients"]["g2 t0"]["received"]), (sent, sent // 2)
        )
        shares = figures["groups"]["g1"]["shares"]
        self.assertTrue(all(shares.values()), f"one subscriber of g1 received nothing: {shares}")


class MsgQueueKilledTests(TestCase):
    """
    One of two msgqueue daemons sharing a Redis store is killed.
    """

    timeout = 150

    async def test_killedMidStream(self) -> None:
        """
        Mid-stream (10,000 messages with Ids, from three clients on two
        publishers), subscriber0 is frozen until msgqueue0 has sent it entries,
        then msgqueue0 with messages stored in Redis that it has not acknowledged
        to publisher0 (see L{freezeStoredNotAcked}); msgqueue0 is killed with
        SIGKILL (not restarted) and subscriber0 thawed: it hands out what
        msgqueue0 had sent it, and cannot acknowledge it.
        publisher0 and subscriber0 move to msgqueue1 by themselves; publisher0
        resends what had no Ack (msgqueue1 skips what msgqueue0 had stored); what
        msgqueue0's consumer held comes back after the ack wait (subscriber0 drops
        what it had handed out).  Every message is acknowledged and reaches every
        subscribed client once: nothing lost, no duplicate.
        """
        redis = startRedis(self)
        shared = await startSharedQueue(self, redis.url, msgqueueArgs=("--ack-wait", ACK_WAIT))
        victim, survivor = shared.msgqueues
        publisher, otherPublisher = shared.publishers
        subscriber, otherSubscriber = shared.subscribers
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "a both", subscriber.port, TOPICS)
        await SubscribingClient.open(clients, checker, "a t1", subscriber.port, ["t1"])
        await SubscribingClient.open(clients, checker, "b both", otherSubscriber.port, TOPICS)
        publishers = [
            PublishingClient(checker, clients, name, daemon.port, TOPICS, count)
            for name, daemon, count in (("p0", publisher, 4000), ("p1", publisher, 4000), ("p2", otherPublisher, 2000))
        ]
        startPublishing(self, publishers)
        moving = (publisher, subscriber)
        facts: dict = {"survivorPort": survivor.port}

        async def fault() -> None:
            await waitFor(lambda: len(checker.acked) >= 2000, 60, what="2000 acks")
            marks = [stage.eventMark() for stage in moving]
            # subscriber0 frozen first: what msgqueue0 delivers to it from now on
            # waits in its socket, and is handed to its clients after msgqueue0 has
            # died, so that its acknowledgements are never recorded.
            subscriber.kill(signal.SIGSTOP)
            await waitFor(lambda: pendingEntries(redis, ["a"])["a"] >= 200, 30, what="entries for frozen subscriber0")
            facts.update(await freezeStoredNotAcked(victim, redis, producerOf(publisher), checker, ["p0", "p1"], 30))
            held = heldEntries(redis, "a")
            facts["killedAtAcks"] = len(checker.acked)
            victim.kill(signal.SIGKILL)
            self.assertEqual(await victim.waitForExit(), -signal.SIGKILL)
            subscriber.kill(signal.SIGCONT)
            for stage, mark in zip(moving, marks):
                await stage.waitForLinks(since=mark, timeout=30)
            facts["linksAfterKill"] = {stage.name: linkPorts(stage, mark) for stage, mark in zip(moving, marks)}
            # Before the ack wait gives them back: how many its clients already have.
            facts["heldByKilledConsumer"] = len(held)
            facts["handedOutByKilledConsumer"] = len(held & checker.watchers["a both"].keys)

        await duringFault(self, checker, facts, fault())
        figures = await finishStream(self, checker, publishers, 90, order=False,
                                     pending=lambda: pendingEntries(redis, ["a", "b"]),
                                     extra=lambda: dict(facts, resends=resends(publisher)))
        self.assertEqual((figures["acked"], figures["errors"]), (10_000, 0))
        self.assertGreater(facts["handedOutByKilledConsumer"], 0, "the kill did not land as intended")
        for stage in moving:
            self.assertEqual(facts["linksAfterKill"][stage.name][:1], [survivor.port],
                             f"{stage.name} did not move to msgqueue1")


class RedisFaultTests(TestCase):
    """
    Redis itself goes away: killed and restarted, or failed over by Sentinel.
    """

    timeout = 150

    async def test_redisKilledAndRestarted(self) -> None:
        """
        redis-server (append-only file, fsynced after every write) is killed with
        SIGKILL while two msgqueue daemons on it take a stream, and restarted on
        the same port and folder once a msgqueue has failed to store messages: every
        acknowledged message reaches every subscribed client (a refused one may or
        may not), none twice, and the msgqueue daemons carry on by themselves:
        what is published after the restart is all acknowledged and delivered.
        """
        redis = startRedis(self, appendOnly=True)
        shared = await startSharedQueue(self, redis.url, msgqueueArgs=("--ack-wait", ACK_WAIT))
        publisher, otherPublisher = shared.publishers
        subscriber, otherSubscriber = shared.subscribers
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "a both", subscriber.port, TOPICS)
        await SubscribingClient.open(clients, checker, "b both", otherSubscriber.port, TOPICS)
        await SubscribingClient.open(clients, checker, "b t0", otherSubscriber.port, ["t0"])
        stream = [
            PublishingClient(checker, clients, name, daemon.port, TOPICS, 3000)
            for name, daemon in (("p0", publisher), ("p1", otherPublisher))
        ]
        startPublishing(self, stream)
        facts: dict = {}

        async def fault() -> None:
            await waitFor(lambda: len(checker.acked) >= 1500, 60, what="1500 acks")
            facts["killedAtAcks"] = len(checker.acked)
            marks = [queue.logMark() for queue in shared.msgqueues]
            redis.kill()
            await waitFor(
                lambda: any(STORE_FAILED in queue.logText(mark) for queue, mark in zip(shared.msgqueues, marks)), 15,
                what="a msgqueue failing to store pushed messages while Redis is down",
            )
            facts["errorsWhenRestarted"] = len(checker.errors)
            redis.start()
            facts["probesRefusedAfterRestart"] = [
                await publishUntilAcked(clients, daemon.port, 30) for daemon in (publisher, otherPublisher)
            ]

        await duringFault(self, checker, facts, fault())
        after = [
            PublishingClient(checker, clients, name, daemon.port, TOPICS, 500)
            for name, daemon in (("q0", publisher), ("q1", otherPublisher))
        ]
        startPublishing(self, after)
        figures = await finishStream(self, checker, stream + after, 60, order=False,
                                     pending=lambda: pendingEntries(redis, ["a", "b"]),
                                     extra=lambda: dict(facts, ackedAfterRestart=ackedOf(checker, ["q0", "q1"])))
        self.assertEqual(figures["unanswered"], 0)
        self.assertEqual((ackedOf(checker, ["q0", "q1"]), errorsOf(checker, ["q0", "q1"])), (1000, 0))

    async def test_sentinelFailover(self) -> None:
        """
        A master, a replica and three Sentinels (quorum 2, the master down after
        1 s); msgqueue on C{redis+sentinel://} with C{--redis-min-replicas 1}.  The
        master is killed with SIGKILL mid-stream; the Sentinels promote the
        replica, and the old master is started again as the new master's replica
        (so that appends find a replica again).  Every message acknowledged before
        or after the fail-over reaches every subscribed client once, and msgqueue
        finds the new master by itself: what is published after the fail-over is
        all acknowledged and delivered.
        """
        master = startRedis(self)
        replica = startRedis(self, extra=("--replicaof", "127.0.0.1", master.port))
        await waitFor(lambda: inSync(replica), 10, what="the replica in sync")
        sentinels = [
            startRedis(self, sentinelFor=(MASTER, master.port), sentinelQuorum=2, sentinelOptions=(
                ("down-after-milliseconds", 1000), ("failover-timeout", 3000),
            ))
            for _ in range(3)
        ]
        await waitFor(
            lambda: all(sentinelView(s, "num-other-sentinels") == "2" and sentinelView(s, "num-slaves") == "1"
                        for s in sentinels),
            20, interval=0.1, what="the Sentinels to know each other and the replica",
        )
        store = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + f"/{MASTER}/0"
        shared = await startSharedQueue(
            self, store, msgqueues=1, publishers=((0,),), subscribers=(("s", (0,)),),
            msgqueueArgs=("--redis-min-replicas", "1", "--ack-wait", ACK_WAIT),
        )
        [publisher] = shared.publishers
        [subscriber] = shared.subscribers
        clients = Clients(self)
        checker = DeliveryChecker()
        await SubscribingClient.open(clients, checker, "both", subscriber.port, TOPICS)
        await SubscribingClient.open(clients, checker, "t1", subscriber.port, ["t1"])
        stream = [PublishingClient(checker, clients, "p0", publisher.port, TOPICS, 3000)]
        startPublishing(self, stream)
        facts: dict = {"newMasterPort": replica.port}

        async def fault() -> None:
            await waitFor(lambda: len(checker.acked) >= 1000, 60, what="1000 acks")
            facts["killedAtAcks"] = len(checker.acked)
            killedTime = reactor.seconds()
            master.kill()
            await waitFor(
                lambda: all(masterPort(s) == replica.port for s in sentinels), 30, interval=0.1,
                what="the Sentinels to promote the replica",
            )
            facts["failedOverAfterSeconds"] = round(reactor.seconds() - killedTime, 2)
            master.extra = ("--replicaof", "127.0.0.1", replica.port)
            master.start()
            await waitFor(lambda: inSync(master), 15, what="the old master in sync as the new master's replica")
            facts["probesRefusedAfterFailover"] = await publishUntilAcked(clients, publisher.port, 30)
            facts["acceptingAgainAfterSeconds"] = round(reactor.seconds() - killedTime, 2)

        await duringFault(self, checker, facts, fault())
        after = [PublishingClient(checker, clients, "q0", publisher.port, TOPICS, 1000)]
        startPublishing(self, after)
        figures = await finishStream(self, checker, stream + after, 60, order=False,
                                     pending=lambda: pendingEntries(replica, ["s"]),
                                     extra=lambda: dict(facts, ackedAfterFailover=ackedOf(checker, ["q0"])))
        self.assertEqual(figures["unanswered"], 0)
        self.assertEqual((ackedOf(checker, ["q0"]), errorsOf(checker, ["q0"])), (1000, 0))


def inSync(server: RedisServer) -> bool:
    """
    Whether C{server} is a replica whose link to its master is up.
    """
    return "master_link_status:up" in server.command("INFO", "replication")


def sentinelView(sentinel: RedisServer, field: str) -> str | None:
    """
    One field of what C{sentinel} knows of the master (C{SENTINEL MASTER}).
    """
    reply = sentinel.command("SENTINEL", "MASTER", MASTER)
    return dict(zip(reply[::2], reply[1::2])).get(field)


def masterPort(sentinel: RedisServer) -> int | None:
    """
    The port of the master C{sentinel} names now.
    """
    reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
    return int(reply[1]) if reply else None
