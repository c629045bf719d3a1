"""
End to end: real C{twistd} daemons (msgqueue, publisher, subscriber, and the
all-in-one C{wsqueue}) on free loopback ports, driven over C{wss://} by Autobahn
clients and by the independent C{websockets} library.

Nothing here sleeps to synchronise: every wait is on a condition with a deadline
(C{noFrameWithin} is the one bounded wait, to check that something does I{not} arrive).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import ssl
from collections import Counter, defaultdict

from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websockets.asyncio.client import connect as wsConnect
from websockets.exceptions import InvalidStatus

from tests.daemons import TWISTD, Daemon, freePort, runProcess, startDaemon, startDaemonPipeline
from tests.helpers import Clients, caPath, certDir, nextJSON, noFrameWithin, waitFor, withTimeout
from wsqueue.auth import basicHeader, hashPassword, writeCredentialsFile
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.client import ClientProtocol


def send(client: ClientProtocol, frame: dict) -> None:
    client.sendMessage(json.dumps(frame).encode("utf-8"))


async def subscribe(client: ClientProtocol, topic: str, requestId: object) -> None:
    """
    Subscribe C{client} to C{topic} and wait for the subscriber's C{Ack}.
    """
    send(client, {"Topic": topic, "Content": "sub", "Id": requestId})
    reply = await nextJSON(client)
    assert reply == {"Ack": requestId}, f"subscribing to {topic}: {reply!r}"


def takeFrames(client: ClientProtocol) -> list:
    """
    Every frame the client has received and not yet read, decoded.
    """
    frames = [json.loads(frame) for frame in client.frames.pending if frame is not None]
    del client.frames.pending[:]
    return frames


def waitForFrames(client: ClientProtocol, count: int, timeout: float, what: str):
    return waitFor(lambda: len(client.frames.pending) >= count, timeout, what=f"{count} frames {what}")


def assertMessage(testCase: TestCase, frame: dict, topic: str, content: str) -> None:
    """
    A message frame as subscribers receive it: the published frame plus Offset and Epoch.
    """
    testCase.assertEqual(set(frame), {"Topic", "Content", "Offset", "Epoch"}, frame)
    testCase.assertEqual((frame["Topic"], frame["Content"]), (topic, content))
    testCase.assertIsInstance(frame["Offset"], int)
    testCase.assertIsInstance(frame["Epoch"], str)


def readIfExists(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def sslContext() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=caPath())


def wsOpen(port: int, path: str, user: str | None = "hello", password: str = "test"):
    headers = {} if user is None else {"Authorization": basicHeader(user, password)}
    return wsConnect(f"wss://localhost:{port}{path}", ssl=sslContext(), additional_headers=headers, open_timeout=10)


def runAsyncio(coroutineFunction, *args):
    """
    Run an asyncio coroutine function in a thread, so the reactor keeps serving.
    """
    return withTimeout(deferToThread(lambda: asyncio.run(coroutineFunction(*args))), 30, "the websockets client")


class PublishSubscribeTests(TestCase):
    """
    Messages flow from publishing clients through the three daemons to subscribing clients.
    """

    timeout = 60

    async def test_subscribeReceiveUnsubscribe(self) -> None:
        """
        A subscribed client receives what is published on its topic; after it
        unsubscribes it receives nothing more, while a client still subscribed does.
        A malformed publish is answered with an Error.
        """
        pipeline = await startDaemonPipeline(self)
        clients = Clients(self)
        subscriber = await clients.connect(pipeline.subscriber.port, "/subscribe")
        witness = await clients.connect(pipeline.subscriber.port, "/subscribe")
        publisher = await clients.connect(pipeline.publisher.port, "/publish")

        await subscribe(subscriber, "news", 1)
        # The typed form (no Id, so no Ack); the Ack of the next request shows it was handled.
        witness.sendMessage(b"sub news")
        await subscribe(witness, "other", "sync")

        send(publisher, {"Topic": "news", "Content": "first", "Id": 1})
        self.assertEqual(await nextJSON(publisher), {"Ack": 1})
        received = await nextJSON(subscriber)
        assertMessage(self, received, "news", "first")
        self.assertEqual(await nextJSON(witness), received)

        send(subscriber, {"Topic": "news", "Content": "unsub", "Id": 2})
        self.assertEqual(await nextJSON(subscriber), {"Ack": 2})
        send(publisher, {"Topic": "news", "Content": "second", "Id": 2})
        self.assertEqual(await nextJSON(publisher), {"Ack": 2})
        assertMessage(self, await nextJSON(witness), "news", "second")
        await noFrameWithin(subscriber, 0.5)
        self.assertFalse(subscriber.closed.called)

        # A frame that is not a message is refused with an Error naming the request.
        send(publisher, {"Topic": "news", "Id": 3})
        self.assertEqual(await nextJSON(publisher), {"Error": "Content must be a string", "Id": 3})

    async def test_manyPublishersAndSubscribers(self) -> None:
        """
        Three publishing clients (on two publisher daemons) each publish 200 messages
        round-robin on three topics while five subscribing clients (on two subscriber
        daemons) listen to one to three topics each: every client gets every message
        of its topics exactly once, and each publisher's messages in publish order.
        """
        perPublisher = 200
        topics = ["t0", "t1", "t2"]
        pipeline = await startDaemonPipeline(self, publishers=2, subscribers=[(), ()])
        clients = Clients(self)
        subscriptions = [{"t0"}, {"t1"}, {"t0", "t2"}, {"t0", "t1", "t2"}, {"t1", "t2"}]
        subscribers = []
        for number, wanted in enumerate(subscriptions):
            client = await clients.connect(pipeline.subscribers[number % 2].port, "/subscribe")
            for topic in sorted(wanted):
                await subscribe(client, topic, topic)
            subscribers.append(client)
        publisherPorts = [pipeline.publishers[0].port, pipeline.publishers[0].port, pipeline.publishers[1].port]
        publishers = [await clients.connect(port, "/publish") for port in publisherPorts]

        def topicOf(sequence: int) -> str:
            return topics[sequence % len(topics)]

        for sequence in range(perPublisher):
            for name, publisher in enumerate(publishers):
                send(publisher, {"Topic": topicOf(sequence), "Content": f"p{name}:{sequence}", "Id": sequence})
        for name, publisher in enumerate(publishers):
            await waitForFrames(publisher, perPublisher, 30, f"(acks) for publisher p{name}")
            acks = takeFrames(publisher)
            self.assertEqual(sorted(ack["Ack"] for ack in acks), list(range(perPublisher)), f"p{name}: {acks[:5]}")

        expected = [
            sum(1 for sequence in range(perPublisher) if topicOf(sequence) in wanted) * len(publishers)
            for wanted in subscriptions
        ]
        received = []
        for number, client in enumerate(subscribers):
            await waitForFrames(client, expected[number], 30, f"for subscribing client {number}")
            received.append(takeFrames(client))
        for client in subscribers:
            await noFrameWithin(client, 0.1)
        for number, frames in enumerate(received):
            contents = Counter(frame["Content"] for frame in frames)
            duplicates = {content: n for content, n in contents.items() if n > 1}
            self.assertEqual(duplicates, {}, f"client {number} got duplicates")
            self.assertEqual(len(frames), expected[number], f"client {number}")
            byPublisher = defaultdict(list)
            for frame in frames:
                name, sequence = frame["Content"].split(":")
                sequence = int(sequence)
                self.assertEqual(frame["Topic"], topicOf(sequence), frame)
                self.assertIn(frame["Topic"], subscriptions[number])
                byPublisher[name].append(sequence)
            for name in ("p0", "p1", "p2"):
                wantedSequences = [s for s in range(perPublisher) if topicOf(s) in subscriptions[number]]
                self.assertEqual(byPublisher[name], wantedSequences, f"client {number}, publisher {name}: order")

    async def test_consumerGroups(self) -> None:
        """
        Subscriber daemons in different groups each deliver every message; two in the
        same group share the stream: each message is delivered by exactly one of them,
        and both deliver some, under a burst of 2000 messages and under light load.
        """
        count = 2000
        groups = ["alpha", "beta", "shared", "shared"]
        pipeline = await startDaemonPipeline(self, subscribers=[("--group", group) for group in groups])
        clients = Clients(self)
        subscribers = []
        for daemon in pipeline.subscribers:
            client = await clients.connect(daemon.port, "/subscribe")
            await subscribe(client, "load", 1)
            subscribers.append(client)
        publisher = await clients.connect(pipeline.publisher.port, "/publish")
        for sequence in range(count):
            send(publisher, {"Topic": "load", "Content": str(sequence), "Id": sequence})
        await waitForFrames(publisher, count, 30, "(acks)")
        self.assertEqual(takeFrames(publisher), [{"Ack": sequence} for sequence in range(count)])

        alpha, beta, shared1, shared2 = subscribers
        await waitForFrames(alpha, count, 30, "for group alpha")
        await waitForFrames(beta, count, 30, "for group beta")
        await waitFor(
            lambda: len(shared1.frames.pending) + len(shared2.frames.pending) >= count, 30,
            what=f"{count} frames for group shared",
        )
        alphaGot, betaGot, first, second = ([frame["Content"] for frame in takeFrames(client)] for client in subscribers)
        for client in subscribers:
            await noFrameWithin(client, 0.1)
        everything = [str(sequence) for sequence in range(count)]
        self.assertEqual(alphaGot, everything, "group alpha")
        self.assertEqual(betaGot, everything, "group beta")
        self.assertEqual(sorted(first + second, key=int), everything, "group shared: each message exactly once")
        self.assertTrue(first and second, f"one member of group shared got everything: {len(first)} / {len(second)}")
        for part in (first, second):
            self.assertEqual(part, sorted(part, key=int), "each member delivers in queue order")

        # Light load: one message at a time, each delivered before the next is
        # published.  The group still shares the stream.
        trickle = 20
        delivered = [[], []]
        for sequence in range(count, count + trickle):
            send(publisher, {"Topic": "load", "Content": str(sequence), "Id": sequence})
            self.assertEqual(await nextJSON(publisher), {"Ack": sequence})
            await waitFor(
                lambda: shared1.frames.pending or shared2.frames.pending, 10, what=f"message {sequence} in group shared"
            )
            for index, client in enumerate((shared1, shared2)):
                delivered[index] += [frame["Content"] for frame in takeFrames(client)]
        for client in (shared1, shared2):
            await noFrameWithin(client, 0.1)
        self.assertEqual(sorted(delivered[0] + delivered[1], key=int), [str(s) for s in range(count, count + trickle)])
        self.assertTrue(
            delivered[0] and delivered[1],
            f"under light load one member of group shared got everything: {delivered[0]} / {delivered[1]}",
        )

    async def test_allInOne(self) -> None:
        """
        C{twistd wsqueue --credentials FILE} (as the README shows, with a file that
        does not hold the demo account) runs all three stages in one process: its
        stages link to their own msgqueue at once (#8, item 11: they used to loop on
        401 with the demo account), it says once per stage what listens where, and
        it warns about nothing; publish, receive; on SIGTERM it closes its clients
        with 1001 and shuts down cleanly.
        """
        ports = [freePort() for _ in range(3)]
        msgqueuePort, publisherPort, subscriberPort = ports
        credentials = os.path.abspath(self.mktemp())
        writeCredentialsFile(credentials, {"alice": hashPassword("secret")})
        daemon = Daemon(
            self, "wsqueue",
            ["--msgqueue-port", str(msgqueuePort), "--publisher-port", str(publisherPort),
             "--subscriber-port", str(subscriberPort), "--credentials", credentials],
            port=subscriberPort, ports=ports, withPort=False,
        )
        await daemon.start()
        links = await daemon.waitForLinks(count=2)
        self.assertTrue(all(f"localhost:{msgqueuePort}/" in line for line in links), links)
        startup = daemon.logText()
        self.assertNotIn("HTTP 401", startup)
        self.assertNotIn("refused", startup)
        self.assertNotIn("#warn]", startup)
        for stage, port, paths in (("msgqueue", msgqueuePort, "/popmsg, /pushmsg"),
                                   ("publisher", publisherPort, "/publish"),
                                   ("subscriber", subscriberPort, "/subscribe")):
            self.assertEqual(startup.count(f"{stage} listening on wss://127.0.0.1:{port} ({paths})"), 1, startup)
        clients = Clients(self)
        subscriber = await clients.connect(subscriberPort, "/subscribe", "alice", "secret")
        await subscribe(subscriber, "news", "s")
        publisher = await clients.connect(publisherPort, "/publish", "alice", "secret")
        send(publisher, {"Topic": "news", "Content": "all in one", "Id": "p"})
        self.assertEqual(await nextJSON(publisher), {"Ack": "p"})
        assertMessage(self, await nextJSON(subscriber), "news", "all in one")

        daemon.kill(signal.SIGTERM)
        closes = [await withTimeout(client.closed, 10, "the daemon closing its clients") for client in (subscriber, publisher)]
        code = await daemon.waitForExit()
        self.assertEqual([code for code, _ in closes], [1001, 1001], closes)
        assertCleanExit(self, daemon, code)


    async def test_allInOneWithCertificateForAnotherName(self) -> None:
        """
        The all-in-one daemon with a certificate made for its public name only
        (C{wsqueue-certs DIR --host mq.example.org}): its stages still link to their
        own msgqueue on loopback, verifying it under that name (they used to refuse
        every link: the certificate does not name localhost).
        """
        folder = os.path.abspath(self.mktemp())
        makeDevelopmentCertificates(folder, hosts=("mq.example.org",))
        ports = [freePort() for _ in range(3)]
        daemon = Daemon(
            self, "wsqueue",
            ["--msgqueue-port", str(ports[0]), "--publisher-port", str(ports[1]),
             "--subscriber-port", str(ports[2]), "--cert-dir", folder, "--store", "memory"],
            port=ports[2], ports=ports, withPort=False,
        )
        await daemon.start()
        links = await daemon.waitForLinks(count=2)
        self.assertTrue(all(f"mq.example.org:{ports[0]}/" in line for line in links), links)
        self.assertNotIn("cannot open the link", daemon.logText())


class FaultTests(TestCase):
    """
    Daemons killed, restarted, stopped, or started without what they need.
    """

    timeout = 60

    async def test_msgqueueRestart(self) -> None:
        """
        After msgqueue is killed with SIGKILL and started again on the same port, the
        publisher and subscriber reconnect by themselves: a message published while it
        was down and one published after it came back reach a client that stayed
        connected to the subscriber, within 10 s of the restart.
        """
        pipeline = await startDaemonPipeline(self)
        msgqueue = pipeline.msgqueue
        clients = Clients(self)
        subscriber = await clients.connect(pipeline.subscriber.port, "/subscribe")
        await subscribe(subscriber, "news", 1)
        publisher = await clients.connect(pipeline.publisher.port, "/publish")
        send(publisher, {"Topic": "news", "Content": "before", "Id": "before"})
        self.assertEqual(await nextJSON(publisher), {"Ack": "before"})
        before = await nextJSON(subscriber)
        assertMessage(self, before, "news", "before")

        marks = [stage.logMark() for stage in (pipeline.publisher, pipeline.subscriber)]
        msgqueue.kill(signal.SIGKILL)
        self.assertEqual(await msgqueue.waitForExit(), -signal.SIGKILL)
        send(publisher, {"Topic": "news", "Content": "during", "Id": "during"})

        restarted = reactor.seconds()
        await msgqueue.restart()
        send(publisher, {"Topic": "news", "Content": "after", "Id": "after"})
        remaining = max(0.1, restarted + 10 - reactor.seconds())
        await waitForFrames(subscriber, 2, remaining, "within 10 s of msgqueue's restart")
        during, after = takeFrames(subscriber)
        self.assertLess(reactor.seconds() - restarted, 10)
        assertMessage(self, during, "news", "during")
        assertMessage(self, after, "news", "after")
        # The default store is durable: the same epoch, and offsets go on from before.
        self.assertEqual(after["Epoch"], before["Epoch"])
        self.assertLess(before["Offset"], during["Offset"])
        self.assertLess(during["Offset"], after["Offset"])
        await waitForFrames(publisher, 2, 10, "(acks after the restart)")
        self.assertEqual(takeFrames(publisher), [{"Ack": "during"}, {"Ack": "after"}])

        self.assertFalse(subscriber.closed.called, "the client stayed connected to the subscriber")
        for stage, mark in zip((pipeline.publisher, pipeline.subscriber), marks):
            self.assertTrue(stage.running, f"{stage.name} kept running")
            log = stage.logText(mark)
            self.assertIn("link to msgqueue at ", log)
            self.assertRegex(log, r"link to msgqueue at \S+ closed")
            self.assertRegex(log, r"link to msgqueue at \S+ open")

    async def test_groupMemberCrash(self) -> None:
        """
        When one subscriber daemon of a group dies (frozen with SIGSTOP while its
        share of the stream is in flight, then SIGKILL), msgqueue hands what it had
        not acknowledged to the other member: nothing is lost, nothing is repeated.
        """
        count = 1000
        pipeline = await startDaemonPipeline(self, subscribers=[("--group", "shared"), ("--group", "shared")])
        doomed, survivor = pipeline.subscribers
        clients = Clients(self)
        survivorClient = await clients.connect(survivor.port, "/subscribe")
        await subscribe(survivorClient, "load", 1)
        doomedClient = await clients.connect(doomed.port, "/subscribe")
        await subscribe(doomedClient, "load", 1)
        publisher = await clients.connect(pipeline.publisher.port, "/publish")

        doomed.kill(signal.SIGSTOP)
        for sequence in range(count):
            send(publisher, {"Topic": "load", "Content": str(sequence), "Id": sequence})
        await waitForFrames(publisher, count, 30, "(acks)")
        self.assertEqual(takeFrames(publisher), [{"Ack": sequence} for sequence in range(count)])
        # The survivor delivers its share; the frozen member holds the rest unacknowledged.
        await waitFor(lambda: survivorClient.frames.pending, 10, what="the survivor's share")
        shareBefore = len(survivorClient.frames.pending)
        doomed.kill(signal.SIGKILL)
        self.assertEqual(await doomed.waitForExit(), -signal.SIGKILL)

        await waitForFrames(survivorClient, count, 30, "from the survivor after the crash")
        frames = takeFrames(survivorClient)
        await noFrameWithin(survivorClient, 0.2)
        self.assertEqual(sorted(int(frame["Content"]) for frame in frames), list(range(count)))
        self.assertLess(shareBefore, count, "the frozen member had no share: nothing was redelivered")
        self.assertEqual(takeFrames(doomedClient), [], "the frozen member delivered nothing")

    async def test_sigtermClosesClientsWithGoingAway(self) -> None:
        """
        On SIGTERM a daemon closes its clients' WebSockets with 1001 (going away) and
        its link to msgqueue the same way, then exits after a clean shutdown.
        """
        pipeline = await startDaemonPipeline(self)
        clients = Clients(self)
        subscriber = await clients.connect(pipeline.subscriber.port, "/subscribe")
        await subscribe(subscriber, "news", 1)
        publisher = await clients.connect(pipeline.publisher.port, "/publish")
        mark = pipeline.msgqueue.logMark()

        for daemon, client in ((pipeline.subscriber, subscriber), (pipeline.publisher, publisher)):
            daemon.kill(signal.SIGTERM)
            code, reason = await withTimeout(client.closed, 10, f"{daemon.name} closing its client")
            self.assertEqual(code, 1001, f"{daemon.name}: close code {code} ({reason})")
            assertCleanExit(self, daemon, await daemon.waitForExit())
        for path in ("/popmsg", "/pushmsg"):
            # The links to msgqueue close the same way.
            await pipeline.msgqueue.waitForLog(re.compile(rf"left {path}\S* \(code 1001\b"), since=mark, timeout=10)

    async def test_sigtermExitsCleanly(self) -> None:
        """
        SIGTERM stops each daemon through twistd's shutdown (services stopped, "Server
        Shut Down." logged, no traceback) and the process exits with status 0.
        """
        pipeline = await startDaemonPipeline(self)
        for daemon in (pipeline.subscriber, pipeline.publisher, pipeline.msgqueue):
            daemon.kill(signal.SIGTERM)
            assertCleanExit(self, daemon, await daemon.waitForExit())

    async def test_missingCertificates(self) -> None:
        """
        A daemon whose certificate folder lacks server.crt or server.key exits with a
        non-zero status after one line naming the missing file, without a traceback.
        """
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        noKey = os.path.abspath(self.mktemp())
        os.makedirs(noKey)
        shutil.copy(os.path.join(certDir(), "server.crt"), noKey)
        cases = [
            (["wsqueue-msgqueue"], empty, "server.crt"),
            (["wsqueue-publisher"], empty, "server.crt"),
            (["wsqueue-subscriber"], empty, "server.crt"),
            (["wsqueue", "--msgqueue-port", str(freePort()), "--publisher-port", str(freePort()),
              "--subscriber-port", str(freePort())], empty, "server.crt"),
            (["wsqueue-msgqueue"], noKey, "server.key"),
        ]
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        runs = []
        for number, (tap, folder, _) in enumerate(cases):
            logPath = os.path.join(logs, f"{number}.log")
            argv = [*TWISTD, "-n", "--pidfile=", f"--logfile={logPath}", *tap, "--cert-dir", folder]
            if tap[0] != "wsqueue":
                argv += ["--port", str(freePort())]
            runs.append(runProcess(argv, path=folder))
        results = await DeferredList(runs, fireOnOneErrback=True, consumeErrors=True)
        for number, ((tap, folder, missing), (_, (code, output))) in enumerate(zip(cases, results)):
            what = f"{tap[0]} with --cert-dir {folder}"
            logPath = os.path.join(logs, f"{number}.log")
            self.assertNotIn("Traceback", readIfExists(logPath), what)
            self.assertNotEqual(code, 0, what)
            self.assertNotIn("Traceback", output, what)
            lines = [line for line in output.splitlines() if line.strip()]
            self.assertEqual(len(lines), 1, f"{what}: {output!r}")
            self.assertIn(os.path.join(folder, missing), lines[0], what)
            self.assertIn("does not exist", lines[0], what)

    async def test_portInUse(self) -> None:
        """
        A daemon whose port is taken does not start: it exits non-zero and says which
        address it could not listen on; the daemon holding the port keeps serving.
        """
        holder = await startDaemon(self, "wsqueue-msgqueue")
        logPath = os.path.abspath(self.mktemp()) + ".log"
        argv = [*TWISTD, "-n", "--pidfile=", f"--logfile={logPath}", "wsqueue-publisher",
                "--port", str(holder.port), "--cert-dir", certDir(), "--queue", holder.url]
        code, output = await runProcess(argv)
        self.assertNotEqual(code, 0, output)
        said = readIfExists(logPath) + output
        self.assertIn(f"wsqueue: cannot listen on 127.0.0.1:{holder.port}: ", said)
        self.assertNotIn("Traceback", said)
        self.assertTrue(holder.running)
        self.assertTrue(await holder.waitReady(5))


class CommandLineTests(TestCase):
    """
    What twistd shows of wsqueue.
    """

    timeout = 60

    async def test_twistdHelpListsPlugins(self) -> None:
        """
        C{twistd --help} lists the four wsqueue plugins, each with its description.
        """
        code, output = await runProcess([*TWISTD, "--help"])
        self.assertEqual(code, 0, output)
        for tapname in ("wsqueue", "wsqueue-msgqueue", "wsqueue-publisher", "wsqueue-subscriber"):
            self.assertRegex(output, rf"(?m)^\s+{re.escape(tapname)}\s+\S", f"{tapname} in twistd --help")


class IndependentClientTests(TestCase):
    """
    The daemons driven by the C{websockets} library (asyncio, in a thread), as a client
    written against the Go system would.
    """

    timeout = 60

    async def test_goStyleFrames(self) -> None:
        """
        The Go system's frames, without Ids: C{{"Topic":"news","Content":"sub"}} to
        subscribe and C{{"Topic":"news","Content":"hi"}} to publish; the subscriber
        receives the message, nothing answers the Id-less frames, and after
        C{{"Topic":"news","Content":"unsub"}} nothing more arrives on the topic.
        """
        pipeline = await startDaemonPipeline(self)

        async def roundTrip(publisherPort: int, subscriberPort: int):
            async with wsOpen(subscriberPort, "/subscribe") as sub, wsOpen(publisherPort, "/publish") as pub:
                await sub.send('{"Topic":"news","Content":"sub"}')
                # An Id-ful request after it: its Ack shows the Go-style one was handled (frames keep order).
                await sub.send('{"Topic":"barrier","Content":"sub","Id":"b"}')
                barrier = json.loads(await asyncio.wait_for(sub.recv(), 10))
                await pub.send('{"Topic":"news","Content":"hi"}')
                message = json.loads(await asyncio.wait_for(sub.recv(), 10))
                try:
                    extra = await asyncio.wait_for(pub.recv(), 0.3)
                except TimeoutError:
                    extra = None
                await sub.send('{"Topic":"news","Content":"unsub"}')
                await sub.send('{"Topic":"barrier","Content":"sub","Id":"c"}')
                unsubscribed = json.loads(await asyncio.wait_for(sub.recv(), 10))
                # One publisher connection keeps order end to end: had "unheard" been
                # delivered, it would come before "marker".
                await pub.send('{"Topic":"news","Content":"unheard"}')
                await pub.send('{"Topic":"barrier","Content":"marker"}')
                afterUnsub = json.loads(await asyncio.wait_for(sub.recv(), 10))
                return barrier, message, extra, unsubscribed, afterUnsub

        barrier, message, extra, unsubscribed, afterUnsub = await runAsyncio(
            roundTrip, pipeline.publisher.port, pipeline.subscriber.port
        )
        self.assertEqual(barrier, {"Ack": "b"})
        assertMessage(self, message, "news", "hi")
        self.assertIsNone(extra, "the publisher answers an Id-less frame with nothing")
        self.assertEqual(unsubscribed, {"Ack": "c"})
        assertMessage(self, afterUnsub, "barrier", "marker")

    async def test_refusedHandshakes(self) -> None:
        """
        Every endpoint refuses wrong or missing credentials with HTTP 401 (and a
        C{WWW-Authenticate} challenge); an unknown path gets 404; good credentials open.
        """
        pipeline = await startDaemonPipeline(self)
        endpoints = [
            (pipeline.msgqueue.port, "/pushmsg"), (pipeline.msgqueue.port, "/popmsg?group=probe"),
            (pipeline.publisher.port, "/publish"), (pipeline.subscriber.port, "/subscribe"),
        ]

        async def status(port: int, path: str, user: str | None, password: str):
            try:
                async with wsOpen(port, path, user, password):
                    return 101, None
            except InvalidStatus as e:
                return e.response.status_code, e.response.headers.get("WWW-Authenticate")

        async def probeAll():
            results = {}
            for port, path in endpoints:
                results[path, "good"] = await status(port, path, "hello", "test")
                results[path, "wrong"] = await status(port, path, "hello", "wrong")
                results[path, "none"] = await status(port, path, None, "")
                results[path, "unknown path"] = await status(port, "/nowhere", "hello", "test")
            return results

        results = await runAsyncio(probeAll)
        for port, path in endpoints:
            self.assertEqual(results[path, "good"][0], 101, path)
            for case in ("wrong", "none"):
                code, challenge = results[path, case]
                self.assertEqual(code, 401, f"{path} with {case} credentials")
                self.assertIsNotNone(challenge, f"{path} with {case} credentials: no WWW-Authenticate")
                self.assertTrue(challenge.lower().startswith("basic"), challenge)
            self.assertEqual(results[path, "unknown path"][0], 404, f"/nowhere on port {port}")


def assertCleanExit(testCase: TestCase, daemon: Daemon, code: int) -> None:
    """
    After SIGTERM the daemon went through twistd's shutdown, logged no error and
    exited with status 0 (not "killed by SIGTERM", which twistd would re-raise).
    """
    log = daemon.logText()
    testCase.assertEqual(code, 0, f"{daemon.name} exit status")
    testCase.assertIn("received SIGTERM: closing connections and exiting", log)
    testCase.assertIn("Server Shut Down.", log, f"{daemon.name} did not finish twistd's shutdown")
    testCase.assertNotIn("Traceback", log, daemon.name)
    testCase.assertNotIn("Unhandled", log, daemon.name)

