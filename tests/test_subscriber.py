"""
The subscriber with a stand-in msgqueue over loopback TLS: subscriptions, fan-out,
redeliveries, epochs and acknowledgements.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue import subscriber as subscriberModule
from wsqueue.auth import makeAuthenticator
from wsqueue.server import Limits
from wsqueue.subscriber import QueueReader, SubscribeHandler, TopicRegistry, makeSubscriberFactory
from wsqueue.testing import RecordingLink, RecordingSubscriber

from .helpers import Clients, assertHandshakeRefusals, listenTLS, nextJSON, noFrameWithin, waitFor
from .standins import StandInQueue, startLink


class SubscriberTests(TestCase):
    timeout = 20

    async def asyncSetUp(self) -> None:
        self.queue = StandInQueue(self)
        self.registry = TopicRegistry()
        self.reader = QueueReader(self.registry, reactor)
        self.factory = makeSubscriberFactory(self.reader, makeAuthenticator(None, reactor), Limits(maxMessageSize=1024), reactor)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)
        self.link = startLink(self, self.queue.listen(), "/popmsg?group=g&ack=explicit", self.reader)
        await waitFor(lambda: self.queue.poppers, what="the subscriber's link")
        self.popper = self.queue.poppers[0]

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self.asyncSetUp())

    async def subscribed(self, *topics: str):
        client = await self.clients.connect(self.port, "/subscribe")
        for number, topic in enumerate(topics):
            client.sendMessage(json.dumps({"Topic": topic, "Content": "sub", "Id": number}).encode())
            self.assertEqual(await nextJSON(client), {"Ack": number})
        return client

    async def test_roundtrip(self) -> None:
        """
        sub, receive, unsub, receive nothing: the Go project's roundtrip.
        """
        client = await self.subscribed("news")
        self.popper.deliver("news", "hello", 1)
        self.assertEqual(await nextJSON(client), {"Topic": "news", "Content": "hello", "Offset": 1, "Epoch": "e1"})
        client.sendMessage(b'{"Topic": "news", "Content": "unsub", "Id": "u"}')
        self.assertEqual(await nextJSON(client), {"Ack": "u"})
        self.popper.deliver("news", "again", 2)
        await waitFor(lambda: 2 in self.popper.acks, what="ack of offset 2")
        await noFrameWithin(client, 0.1)

    async def test_plainTextCommands(self) -> None:
        """
        "sub TOPIC" and "unsub TOPIC" typed into any client work too.
        """
        client = await self.clients.connect(self.port, "/subscribe")
        client.sendMessage(b"sub news")
        await waitFor(lambda: self.registry.subscribers("news"), what="subscription")
        self.popper.deliver("news", "hi", 1)
        self.assertEqual((await nextJSON(client))["Content"], "hi")
        client.sendMessage(b"unsub news")
        await waitFor(lambda: not self.registry.subscribers("news"), what="unsubscription")

    async def test_fanOutOnlyToTopic(self) -> None:
        """
        Each message goes to every client subscribed to its topic, and to no other.
        """
        a = await self.subscribed("x")
        b = await self.subscribed("x", "y")
        c = await self.subscribed("y")
        self.popper.deliver("x", "for x", 1)
        self.assertEqual((await nextJSON(a))["Content"], "for x")
        self.assertEqual((await nextJSON(b))["Content"], "for x")
        self.popper.deliver("y", "for y", 2)
        self.assertEqual((await nextJSON(b))["Content"], "for y")
        self.assertEqual((await nextJSON(c))["Content"], "for y")
        await noFrameWithin(a, 0.1)

    async def test_slowClientDoesNotHoldOthers(self) -> None:
        """
        A client that stops reading does not hold up delivery to the others.
        """
        stalled = await self.subscribed("x")
        stalled.transport.pauseProducing()
        healthy = await self.subscribed("x")
        count, content = 300, "y" * 4000
        for offset in range(1, count + 1):
            self.popper.deliver("x", content, offset)
        await waitFor(lambda: len(healthy.frames.pending) == count, what=f"{count} messages at the healthy client")
        self.assertEqual(stalled.frames.pending, [])
        stalled.transport.resumeProducing()
        await waitFor(lambda: len(stalled.frames.pending) == count, what="the stalled client catching up")

    async def test_slowConsumerClosed(self) -> None:
        """
        A client that lets more than --max-client-buffer bytes pile up is closed with
        1008 "slow consumer" and forgotten; the others get everything.
        """
        # The healthy client shares this process's reactor with the server, so it can
        # lag behind under this burst: give it room, and the stalled one very little.
        for path, limit in (("/small", 50_000), ("/large", 256 * 1024 * 1024)):
            self.factory.routes[path] = lambda connection, request, limit=limit: SubscribeHandler(
                connection, request, self.reader, limit
            )
        stalled, healthy = await self.clients.connect(self.port, "/small"), await self.clients.connect(self.port, "/large")
        for client in (stalled, healthy):
            client.sendMessage(b'{"Topic": "x", "Content": "sub", "Id": 1}')
            self.assertEqual(await nextJSON(client), {"Ack": 1})
        stalled.transport.pauseProducing()
        # Enough to fill the kernel's socket buffers on loopback (megabytes), then the limit.
        count, content = 2000, "z" * 8000
        for offset in range(1, count + 1):
            self.popper.deliver("x", content, offset)
        await waitFor(lambda: len(healthy.frames.pending) == count, what="everything at the healthy client")
        await waitFor(lambda: self.registry.slowConsumersClosed == 1, what="the slow consumer to be closed")
        self.assertEqual([h.connection.path for h in self.registry.subscribers("x")], ["/large"])
        stalled.transport.resumeProducing()
        code, reason = await stalled.closed
        self.assertEqual((code, reason), (1008, "slow consumer"))
        self.assertLess(len(stalled.frames.pending), count)

    async def test_subscribedTwiceReceivesOnce(self) -> None:
        """
        A client subscribed twice to a topic gets each message once.
        """
        client = await self.subscribed("x", "x")
        self.popper.deliver("x", "once", 1)
        self.assertEqual((await nextJSON(client))["Content"], "once")
        await noFrameWithin(client, 0.1)

    async def test_disconnectedClientForgotten(self) -> None:
        """
        A client that disconnects is removed from every topic.
        """
        client = await self.subscribed("x", "y")
        self.assertEqual(self.registry.topics, 2)
        client.sendClose(1000)
        await client.closed
        await waitFor(lambda: self.registry.topics == 0, what="the registry to forget the client")

    async def test_redeliveryDropped(self) -> None:
        """
        An offset the subscriber already handled (msgqueue redelivers after a
        reconnect) is acknowledged but not sent to clients again.
        """
        client = await self.subscribed("x")
        self.popper.deliver("x", "first", 1)
        self.assertEqual((await nextJSON(client))["Offset"], 1)
        self.popper.deliver("x", "first", 1)
        self.popper.deliver("x", "second", 2)
        self.assertEqual((await nextJSON(client))["Offset"], 2)

    async def test_batchFromQueue(self) -> None:
        """
        A batch frame from msgqueue fans out as one frame per message, in order;
        redelivered offsets in it are dropped; the last offset is acknowledged.
        """
        client = await self.subscribed("x")
        self.popper.deliverBatch([[1, "x", "a"], [2, "other", "b"], [3, "x", "c"]])
        self.assertEqual(await nextJSON(client), {"Topic": "x", "Content": "a", "Offset": 1, "Epoch": "e1"})
        self.assertEqual((await nextJSON(client))["Content"], "c")
        self.popper.deliverBatch([[3, "x", "c"], [4, "x", "d"]])
        self.assertEqual((await nextJSON(client))["Offset"], 4)
        await waitFor(lambda: self.popper.acks and self.popper.acks[-1] == 4, what="ack of offset 4")

    async def test_batchFanOutKeepsQueueOrder(self) -> None:
        """
        From one batch, a client on several topics gets its messages in queue order,
        and clients on one topic get exactly that topic's messages, in order.
        """
        onX = await self.subscribed("x")
        onBoth = await self.subscribed("x", "y")
        onY = await self.subscribed("y")
        batch = [[offset, "xy"[offset % 2], f"m{offset}"] for offset in range(1, 41)]
        self.popper.deliverBatch(batch)
        for client, topics in ((onX, "x"), (onBoth, "xy"), (onY, "y")):
            expected = [content for _, topic, content in batch if topic in topics]
            received = [(await nextJSON(client))["Content"] for _ in expected]
            self.assertEqual(received, expected)
        await noFrameWithin(onX, 0.1)

    async def test_noCompression(self) -> None:
        """
        The subscriber declines permessage-deflate, so the frames it builds itself
        are what the client reads.
        """
        client = await self.clients.connect(self.port, "/subscribe", compress=True)
        self.assertIsNone(client._perMessageCompress)
        client.sendMessage(b"sub news")
        await waitFor(lambda: self.registry.subscribers("news"), what="subscription")
        self.popper.deliverBatch([[1, "news", "hi \u00e9"]])
        self.assertEqual((await nextJSON(client))["Content"], "hi \u00e9")

    async def test_newEpochStartsOver(self) -> None:
        """
        After msgqueue's store changes epoch, low offsets are new messages, not repeats.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = await self.subscribed("x")
        self.popper.deliver("x", "old", 5, epoch="e1")
        self.assertEqual((await nextJSON(client))["Content"], "old")
        self.popper.deliver("x", "new", 1, epoch="e2")
        self.assertEqual((await nextJSON(client))["Content"], "new")
        self.assertTrue([e for e in events if "new epoch" in e.get("log_format", "")])

    async def test_acksLastReceived(self) -> None:
        """
        The subscriber acknowledges the last offset it handled, once per burst.
        """
        for offset in range(1, 6):
            self.popper.deliver("nobody", "x", offset)
        await waitFor(lambda: self.popper.acks and self.popper.acks[-1] == 5, what="ack of offset 5")
        self.assertLess(len(self.popper.acks), 5)

    async def test_badInput(self) -> None:
        """
        Bad requests get an Error with the reason; the connection stays open.
        """
        client = await self.clients.connect(self.port, "/subscribe")
        client.sendMessage(b"subscribe news")
        self.assertIn("unknown command", (await nextJSON(client))["Error"])
        client.sendMessage(b'{"Topic": "news", "Content": "publish", "Id": 4}')
        self.assertEqual(await nextJSON(client), {"Error": 'Content must be "sub" or "unsub"', "Id": 4})
        client.sendMessage(b'{"Topic": "", "Content": "sub"}')
        self.assertEqual(await nextJSON(client), {"Error": "Topic must not be empty"})
        client.sendMessage(b'{"Topic": "ok", "Content": "sub", "Id": 5}')
        self.assertEqual(await nextJSON(client), {"Ack": 5})

    async def test_subscriptionLimit(self) -> None:
        """
        A connection cannot hold more than the subscription limit (bounded memory).
        """
        self.patch(self.factory, "maxSubscriptions", 2)
        client = await self.subscribed("a", "b")
        client.sendMessage(b'{"Topic": "c", "Content": "sub", "Id": 9}')
        reply = await nextJSON(client)
        self.assertEqual(reply["Id"], 9)
        self.assertIn("at most 2", reply["Error"])

    async def test_credentialsAndUpgrade(self) -> None:
        """
        /subscribe refuses wrong credentials with 401 and a plain GET with 400.
        """
        await assertHandshakeRefusals(self, self.port, "/subscribe")

    async def test_unexpectedQueueFrame(self) -> None:
        """
        A malformed frame from msgqueue is logged and skipped.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.popper.connection.sendMessage(b"{}")
        await waitFor(lambda: [e for e in events if e["log_level"] == LogLevel.error], what="an error line")

    async def test_linkReconnects(self) -> None:
        """
        When msgqueue drops the link, the subscriber reconnects by itself and clients
        keep receiving.
        """
        client = await self.subscribed("x")
        self.queue.dropAll()
        await waitFor(lambda: len(self.queue.poppers) == 2, what="the new link")
        self.queue.poppers[1].deliver("x", "after", 7)
        self.assertEqual((await nextJSON(client))["Content"], "after")


class AckPacingTests(SynchronousTestCase):
    """
    The reader acknowledges a stream every L{subscriberModule.ACK_EVERY} messages and
    a trickle within L{subscriberModule.ACK_DELAY}, and before its link closes on stop.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.reader = QueueReader(TopicRegistry(), self.clock)
        self.link = RecordingLink()
        self.reader.linkOpened(self.link)

    def deliver(self, *offsets: int) -> None:
        frame = {"Epoch": "e1", "Messages": [[offset, "t", "x"] for offset in offsets]}
        self.reader.linkReceived(self.link, json.dumps(frame).encode(), False)

    def test_trickle(self) -> None:
        """
        Messages arriving one by one share one ack, sent ACK_DELAY after the first.
        """
        for offset in range(1, 6):
            self.deliver(offset)
            self.clock.advance(0.001)
        self.assertEqual(self.link.sentJSON(), [])
        self.clock.advance(subscriberModule.ACK_DELAY)
        self.assertEqual(self.link.sentJSON(), [{"Ack": 5}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stream(self) -> None:
        """
        Once ACK_EVERY messages wait for an ack, it goes in the same reactor turn.
        """
        self.deliver(1)
        self.deliver(*range(2, subscriberModule.ACK_EVERY + 1))
        self.clock.advance(0)
        self.assertEqual(self.link.sentJSON(), [{"Ack": subscriberModule.ACK_EVERY}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopping(self) -> None:
        """
        A stopping stage acknowledges at once what it handed out, and neither hands
        out nor acknowledges what arrives after that (msgqueue gives it to the next
        reader of the group); a closed link leaves nothing scheduled.
        """
        client = RecordingSubscriber()
        self.reader.registry.subscribe("t", client)
        self.deliver(1, 2)
        self.reader.linkStopping(self.link)
        self.assertEqual((self.link.sentJSON(), self.clock.getDelayedCalls()), ([{"Ack": 2}], []))
        self.deliver(3)
        self.clock.advance(subscriberModule.ACK_DELAY)
        self.reader.linkClosed(self.link)
        self.assertEqual(self.link.sentJSON(), [{"Ack": 2}])
        self.assertEqual([offset for offset, _ in client.received], [1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class MistypedFrameTests(SynchronousTestCase):
    """
    A frame from msgqueue whose fields have the wrong types is an unexpected frame:
    logged, nothing handed out or acknowledged, never an exception.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.reader = QueueReader(TopicRegistry(), self.clock)
        self.link = RecordingLink()
        self.reader.linkOpened(self.link)
        self.client = RecordingSubscriber()
        self.reader.registry.subscribe("t", self.client)

    def test_mistyped(self) -> None:
        """
        Offsets that are not integers, topics and contents that are not strings (or
        have no UTF-8 form), entries that are not three long, a missing epoch: each
        is logged once; the good frame after them is delivered and acknowledged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        bad = [
            b'{"Epoch": "e1", "Messages": [["1", "t", "x"]]}',
            b'{"Epoch": "e1", "Messages": [[true, "t", "x"]]}',
            b'{"Epoch": "e1", "Messages": [[1, ["t"], "x"]]}',
            b'{"Epoch": "e1", "Messages": [[1, {"t": 1}, "x"]]}',
            b'{"Epoch": "e1", "Messages": [[1, "t", 5]]}',
            b'{"Epoch": "e1", "Messages": [[1, "t", "\\ud800"]]}',
            b'{"Epoch": "e1", "Messages": [[1, "t"]]}',
            b'{"Epoch": "e1", "Messages": "x"}',
            b'{"Epoch": ["e1"], "Messages": [[1, "t", "x"]]}',
            b'{"Messages": [[1, "t", "x"]]}',
            b'{"Epoch": "e1", "Topic": "t", "Content": "x", "Offset": 1.5}',
            b'{"Epoch": "e1", "Topic": "t", "Content": null, "Offset": 1}',
        ]
        for payload in bad:
            self.reader.linkReceived(self.link, payload, False)
        self.clock.advance(1)
        self.assertEqual((self.client.received, self.link.sentJSON(), self.reader.epoch), ([], [], None))
        self.assertEqual([e["log_format"] for e in events], ["unexpected frame from msgqueue: {frame!r}"] * len(bad))
        self.reader.linkReceived(self.link, b'{"Epoch": "e1", "Messages": [[1, "t", "x"]]}', False)
        self.clock.advance(1)
        self.assertEqual([offset for offset, _ in self.client.received], [1])
        self.assertEqual(self.link.sentJSON(), [{"Ack": 1}])
