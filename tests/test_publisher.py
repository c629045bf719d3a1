"""
The publisher with a stand-in msgqueue over loopback TLS, and its forwarder's buffering
and flow control in memory.
"""

from __future__ import annotations

import json
import socket

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from wsqueue import wire
from wsqueue.auth import makeAuthenticator
from wsqueue.publisher import Forwarder, makePublisherFactory
from wsqueue.server import Limits
from wsqueue.testing import RecordingLink, RecordingPublishClient

from .helpers import Clients, assertHandshakeRefusals, listenTLS, nextJSON, noFrameWithin, waitFor
from .standins import StandInQueue, startLink


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PublisherTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.queue = StandInQueue(self)
        self.forwarder = Forwarder(reactor, maxBuffered=100)
        # As a stop does, leaving nothing scheduled (not waited for: some tests end holding messages).
        self.addCleanup(lambda: self.forwarder.drain() and None)
        self.factory = makePublisherFactory(self.forwarder, makeAuthenticator(None, reactor), Limits(maxMessageSize=1024), reactor)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)

    def link(self, queuePort: int, password: str = "test", retryPolicy=None):
        path = f"/pushmsg?producer={self.forwarder.producerName}"
        return startLink(self, queuePort, path, self.forwarder, password=password, retryPolicy=retryPolicy)

    async def test_roundtrip(self) -> None:
        """
        A published message reaches msgqueue with a sequence number, and the client's Id
        is acknowledged once msgqueue acknowledges it.
        """
        self.link(self.queue.listen())
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(b'{"Topic": "news", "Content": "hi", "Id": "a1"}')
        self.assertEqual(await nextJSON(client), {"Ack": "a1"})
        self.assertEqual(self.queue.pushed, [{"Id": 1, "Topic": "news", "Content": "hi"}])
        self.assertEqual(self.queue.pushers[0].request.params["producer"], [self.forwarder.producerName])

    async def test_noIdNoAck(self) -> None:
        """
        A Go-style message without an Id is forwarded and gets no reply.
        """
        self.link(self.queue.listen())
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(b'{"Topic": "news", "Content": "hi"}')
        await waitFor(lambda: self.queue.pushed, what="the message at msgqueue")
        await noFrameWithin(client, 0.1)

    async def test_badInput(self) -> None:
        """
        Bad frames get an Error and the connection stays open; nothing is forwarded.
        """
        self.link(self.queue.listen())
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(b"nonsense")
        self.assertEqual(await nextJSON(client), {"Error": "frame is not valid JSON"})
        client.sendMessage(b'{"Topic": "a b", "Content": "x", "Id": 9}')
        self.assertEqual((await nextJSON(client))["Id"], 9)
        client.sendMessage(b'{"Topic": "ok", "Content": "x", "Id": 10}')
        self.assertEqual(await nextJSON(client), {"Ack": 10})
        self.assertEqual([m["Topic"] for m in self.queue.pushed], ["ok"])

    async def test_tooBig(self) -> None:
        """
        A message over --max-message-size closes the connection with 1009.
        """
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(json.dumps({"Topic": "t", "Content": "x" * 2000}).encode())
        code, _ = await client.closed
        self.assertEqual(code, 1009)

    async def test_credentialsAndUpgrade(self) -> None:
        """
        /publish refuses wrong credentials with 401 and a plain GET with 400.
        """
        await assertHandshakeRefusals(self, self.port, "/publish")

    async def test_heldWhileQueueAway(self) -> None:
        """
        Messages published while msgqueue is away are held and delivered, in order, once
        it is reachable; only then are they acknowledged.
        """
        queuePort = freePort()
        self.link(queuePort)
        client = await self.clients.connect(self.port, "/publish")
        for i in range(3):
            client.sendMessage(json.dumps({"Topic": "t", "Content": str(i), "Id": i}).encode())
        await waitFor(lambda: self.forwarder.held == 3, what="3 held messages")
        await noFrameWithin(client, 0.1)
        self.queue.listen(queuePort)
        self.assertEqual([await nextJSON(client) for _ in range(3)], [{"Ack": 0}, {"Ack": 1}, {"Ack": 2}])
        self.assertEqual([m["Content"] for m in self.queue.pushed], ["0", "1", "2"])

    async def test_resendAfterReconnect(self) -> None:
        """
        What msgqueue did not acknowledge before the link broke is sent again, with the
        same sequence numbers, and acknowledged to the client once.
        """
        self.queue.autoAck = False
        link = self.link(self.queue.listen())
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(b'{"Topic": "t", "Content": "x", "Id": "only"}')
        await waitFor(lambda: self.queue.pushed, what="first send")
        first = link.protocol
        self.queue.dropAll()
        await waitFor(lambda: link.protocol is not None and link.protocol is not first, what="reconnect")
        await waitFor(lambda: len(self.queue.pushed) == 2, what="the resend")
        self.assertEqual(self.queue.pushed[0], self.queue.pushed[1])
        self.queue.pushers[-1].ack(self.queue.pushed[1]["Id"])
        self.assertEqual(await nextJSON(client), {"Ack": "only"})
        await noFrameWithin(client, 0.1)

    async def test_queueRefusesMessage(self) -> None:
        """
        An Error from msgqueue for a message reaches its client with the client's Id.
        """
        self.queue.autoAck = False
        self.link(self.queue.listen())
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(b'{"Topic": "t", "Content": "x", "Id": "c1"}')
        await waitFor(lambda: self.queue.pushed, what="the message at msgqueue")
        self.queue.pushers[0].connection.sendMessage(json.dumps({"Error": "disk full", "Id": self.queue.pushed[0]["Id"]}).encode())
        self.assertEqual(await nextJSON(client), {"Error": "disk full", "Id": "c1"})
        self.assertEqual(self.forwarder.held, 0)

    async def test_unreachableQueue(self) -> None:
        """
        Dialing an address where nothing listens fails cleanly: a warning naming the
        address, retries, and clients are still served.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        queuePort = freePort()
        link = self.link(queuePort)
        warnings = await waitFor(
            lambda: [e for e in events if "cannot reach msgqueue" in e.get("log_format", "")], what="the warning"
        )
        warning = warnings[0]
        self.assertIn(str(queuePort), warning["url"])
        self.assertIsNone(link.protocol)
        client = await self.clients.connect(self.port, "/publish")
        client.sendMessage(b'{"Topic": "t", "Content": "held"}')
        await waitFor(lambda: self.forwarder.held == 1, what="the message to be held")

    async def test_wrongQueueCredentials(self) -> None:
        """
        A 401 from msgqueue is logged as critical, naming the options to fix, and
        retried with backoff rather than at full speed.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        attempts = []
        link = self.link(self.queue.listen(), password="wrong", retryPolicy=lambda attempt: attempts.append(attempt) or 0.01)
        await waitFor(lambda: len(attempts) >= 3, what="three refused handshakes")
        # ClientService alone would say attempt 1 each time, since TCP connected.
        self.assertEqual(attempts[:3], [2, 3, 4])
        critical = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertTrue(critical)
        self.assertIn("--queue-password", critical[0]["log_format"])
        self.assertIsNone(link.protocol)


class ForwarderTests(TestCase):
    """
    The forwarder's bounds and batching, in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.forwarder = Forwarder(self.clock, maxBuffered=10)
        self.client = RecordingPublishClient()
        self.forwarder.addClient(self.client)

    def submit(self, count: int, start: int = 0) -> list:
        return [self.forwarder.submit(wire.Message("t", str(i), i, True), self.client) for i in range(start, start + count)]

    def test_pausesAtBoundAndResumes(self) -> None:
        """
        Clients are paused when --max-buffered messages are held and resumed once acks
        bring it under half.
        """
        self.submit(9)
        self.assertFalse(self.client.paused)
        self.submit(1, 9)
        self.assertTrue(self.client.paused)
        late = RecordingPublishClient()
        self.forwarder.addClient(late)
        self.assertTrue(late.paused)
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.clock.advance(0)
        self.forwarder.linkReceived(link, b'{"Ack": 6}', False)
        self.assertFalse(self.client.paused)
        self.assertEqual(self.client.acks, list(range(6)))

    def test_pauseIsBounded(self) -> None:
        """
        (#8, item 5) Clients stay paused at most the pause limit: then they are read
        again and what they send is refused with an Error (not left unanswered)
        until msgqueue has taken half of what is held.
        """
        self.submit(10)
        self.assertTrue(self.client.paused)
        self.clock.advance(self.forwarder.flow.pauseLimit - 0.1)
        self.assertTrue(self.client.paused)
        self.clock.advance(0.1)
        self.assertFalse(self.client.paused)
        refused = self.submit(1, 10)[0]
        self.assertIn("buffer is full", refused.reason)
        self.assertEqual(refused.id, 10)
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.clock.advance(0)
        self.forwarder.linkReceived(link, b'{"Ack": 6}', False)
        self.assertEqual(self.submit(1, 11), [None])
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainResumesPausedClients(self) -> None:
        """
        A stopping publisher reads its paused clients again, to refuse what they
        send with an Error, and leaves no timer behind.
        """
        self.submit(10)
        self.forwarder.drain()
        self.assertFalse(self.client.paused)
        self.assertIn("shutting down", self.submit(1, 10)[0].reason)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_eachAcknowledgementIndependent(self) -> None:
        """
        (#8, item 7) An acknowledgement that fails (a client whose Id cannot be
        encoded, a bug) is logged and does not keep the rest of the batch, of this
        client or of others, from theirs.
        """
        broken, other = RecordingPublishClient(), RecordingPublishClient()

        def fail(clientId):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

        broken.acknowledge = fail
        self.forwarder.submit(wire.Message("t", "a", 1, True), broken)
        self.forwarder.submit(wire.Message("t", "b", 2, True), other)
        self.forwarder.submit(wire.Message("t", "c", 3, True), self.client)
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.clock.advance(0)
        self.forwarder.linkReceived(link, b'{"Ack": 3}', False)
        self.assertEqual((other.acks, self.client.acks), ([2], [3]))
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)
        self.assertEqual(self.forwarder.held, 0)

    def test_refusalsSummarised(self) -> None:
        """
        (#8, item 3) A msgqueue that refuses every message makes one log line per
        interval, not one per message; every client still gets its Error.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.submit(5)
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.clock.advance(0)
        for seq in range(1, 6):
            self.forwarder.linkReceived(link, json.dumps({"Error": "msgqueue is full", "Id": seq}).encode(), False)
        self.assertEqual(len(self.client.errors), 5)
        refusals = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refusals), 1)
        self.clock.advance(60)
        self.assertEqual(len([e for e in events if "refused" in e.get("log_format", "")]), 2)

    def test_refusesPastHardLimit(self) -> None:
        """
        Past the overshoot a message is refused with an Error carrying its Id, never
        dropped silently.
        """
        results = self.submit(self.forwarder.flow.hardLimit + 1)
        self.assertEqual(results[:-1], [None] * self.forwarder.flow.hardLimit)
        self.assertIn("buffer is full", results[-1].reason)
        self.assertEqual(results[-1].id, self.forwarder.flow.hardLimit)

    def test_refusesWhileStopping(self) -> None:
        """
        A publisher that is shutting down refuses new messages with an Error.
        """
        self.forwarder.stopping = True
        self.assertIn("shutting down", self.submit(1)[0].reason)

    def test_batches(self) -> None:
        """
        Messages submitted in one reactor turn go to msgqueue as one batch frame of
        C{[Id, Topic, Content]} entries, numbered in order.
        """
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.submit(5)
        self.assertEqual(link.sent, [])
        self.clock.advance(0)
        self.assertEqual(len(link.sent), 1)
        self.assertEqual(json.loads(link.sent[0]), {"Messages": [[i + 1, "t", str(i)] for i in range(5)]})

    def test_batchesWithinMessageSize(self) -> None:
        """
        A batch frame stays within C{batchBytes} (msgqueue's message size limit) with
        non-ASCII text too; a message bigger than that goes alone.
        """
        forwarder = Forwarder(self.clock, batchBytes=1000)
        link = RecordingLink()
        forwarder.linkOpened(link)
        contents = ["a" * 300] * 5 + ["\u00e9" * 300] * 3 + ["b" * 2000, "c"]
        for content in contents:
            forwarder.submit(wire.Message("t", content, None, False), self.client)
        self.clock.advance(0)
        batches = [json.loads(frame)["Messages"] for frame in link.sent]
        self.assertEqual([content for batch in batches for _, _, content in batch], contents)
        for frame, batch in zip(link.sent, batches):
            if len(batch) > 1:
                self.assertLessEqual(len(frame), 1000)
        self.assertIn(["b" * 2000], [[content for _, _, content in batch] for batch in batches])

    def test_batchesWithinMessageSizeWhenEscaped(self) -> None:
        """
        Text that JSON escapes (quotes, control characters: up to 6 bytes for one)
        is longer than the size estimate: the batch is checked once encoded and cut
        until it fits, so that msgqueue never closes the link for a frame that would
        be resent after every reconnect.  Nothing is lost or reordered, and the
        messages taken back out are sent as well.
        """
        forwarder = Forwarder(self.clock, batchBytes=1000)
        link = RecordingLink()
        forwarder.linkOpened(link)
        contents = ['"' * 300] * 3 + ["\x01" * 150] * 5 + ["plain"] * 3
        for content in contents:
            forwarder.submit(wire.Message("t", content, None, False), self.client)
        self.clock.advance(0)
        self.assertEqual([len(frame) <= 1000 for frame in link.sent], [True] * len(link.sent))
        batches = [json.loads(frame)["Messages"] for frame in link.sent]
        self.assertEqual([content for batch in batches for _, _, content in batch], contents)
        self.assertEqual([seq for batch in batches for seq, _, _ in batch], list(range(1, len(contents) + 1)))
        self.assertEqual([held.seq for held in forwarder._inFlight], list(range(1, len(contents) + 1)))

    def test_unexpectedFrames(self) -> None:
        """
        Frames from msgqueue that are neither Ack nor Error are logged, not fatal;
        an Error without an integer Id matches no message and is logged too.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.forwarder.linkReceived(link, b"garbage", False)
        self.forwarder.linkReceived(link, b'{"Error": "general"}', False)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error, LogLevel.error])

    def test_mistypedReplies(self) -> None:
        """
        An Ack that is not an integer, an Error that is not a string (or has no
        UTF-8 form) are unexpected frames: logged, nothing acknowledged or refused.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.submit(2)
        self.clock.advance(0)
        for payload in [b'{"Ack": true}', b'{"Ack": "2"}', b'{"Error": 5, "Id": 1}', b'{"Error": "\\ud800", "Id": 1}']:
            self.forwarder.linkReceived(link, payload, False)
        self.assertEqual((self.forwarder.held, self.client.acks, self.client.errors), (2, [], []))
        self.assertEqual([e["log_format"] for e in events], ["unexpected frame from msgqueue: {frame!r}"] * 4)

    def test_drain(self) -> None:
        """
        Draining refuses new messages and fires once msgqueue acknowledged (or
        refused) everything held.
        """
        link = RecordingLink()
        self.forwarder.linkOpened(link)
        self.submit(3)
        self.clock.advance(0)
        drained = self.forwarder.drain()
        self.assertNoResult(drained)
        self.assertIn("shutting down", self.submit(1, 3)[0].reason)
        self.forwarder.linkReceived(link, b'{"Ack": 2}', False)
        self.assertNoResult(drained)
        self.forwarder.linkReceived(link, b'{"Error": "no room", "Id": 3}', False)
        self.successResultOf(drained)
        self.successResultOf(self.forwarder.drain())
