"""
The in-memory harness (L{wsqueue.testing}) itself, and protocol tests across stages
that run on it: a publisher, msgqueue and a subscriber joined by real WebSocket
links, with real handshakes and Basic auth, without a socket.
"""

from __future__ import annotations

import json

import txaio
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import frames
from wsqueue.link import HandshakeFailed
from wsqueue.server import Limits
from wsqueue.store.memory import MemoryStore
from wsqueue.testing import (
    MemoryNetwork,
    MemoryPipeline,
    RecordingLink,
    RecordingPublishClient,
    RecordingSubscriber,
    serverFrames,
)


class GatedStore(MemoryStore):
    """
    A memory store whose appends wait, while C{holding}, until the test releases
    them: msgqueue has read a frame but not stored it yet.
    """

    def __init__(self, now) -> None:
        super().__init__(now)
        self.holding = False
        self.waiting: list[tuple[Deferred, tuple]] = []

    def append(self, messages, producer=None, seqs=None):
        if not self.holding:
            return super().append(messages, producer, seqs)
        d: Deferred = Deferred()
        self.waiting.append((d, (messages, producer, seqs)))
        return d

    def letThrough(self) -> None:
        self.holding = False
        waiting, self.waiting = self.waiting, []
        for d, args in waiting:
            super().append(*args).chainDeferred(d)


def contents(messages: list[dict]) -> list[str]:
    return [message["Content"] for message in messages]


class FakesTests(SynchronousTestCase):
    """
    The fakes for one stage's logic on its own.
    """

    def test_recordingLink(self) -> None:
        """
        An open link records what is sent; a closed one refuses it, as a real link does.
        """
        link = RecordingLink()
        self.assertTrue(link.send(b'{"Ack": 1}'))
        link.isOpen = False
        self.assertFalse(link.send(b'{"Ack": 2}'))
        self.assertEqual(link.sentJSON(), [{"Ack": 1}])

    def test_recordingPublishClient(self) -> None:
        client = RecordingPublishClient()
        client.acknowledge("a")
        client.pauseProducing()
        self.assertEqual((client.acks, client.paused), (["a"], True))
        client.resumeProducing()
        self.assertFalse(client.paused)

    def test_serverFramesEveryLength(self) -> None:
        """
        Frames with 7-bit, 16-bit and 64-bit lengths, joined in one write, are read
        back as they were built.
        """
        payloads = [b"x" * 5, b"y" * 300, b"z" * 70_000]
        self.assertEqual(serverFrames(b"".join(frames.textFrame(p) for p in payloads)), payloads)

    def test_recordingSubscriber(self) -> None:
        client = RecordingSubscriber()
        deliveries = [{"Topic": "t", "Content": "c" * 200, "Offset": offset, "Epoch": "e"} for offset in (3, 4)]
        client.sendFrames(b"".join(frames.textFrame(json.dumps(d).encode()) for d in deliveries))
        self.assertEqual(client.offsets, [3, 4])
        self.assertEqual(client.received[1][1], deliveries[1])


class NetworkTests(SynchronousTestCase):
    """
    The in-memory network: txaio's loop, handshakes, timers, cuts, refusals, pauses.
    """

    def test_txaioLoopRestored(self) -> None:
        """
        Autobahn's timers run on the network's clock while it exists, and on what
        they ran on before once it is restored (a C{with} block, or a test's cleanup).
        """
        before = txaio.config.loop
        with MemoryNetwork() as network:
            self.assertIs(txaio.config.loop, network.clock)
        self.assertIs(txaio.config.loop, before)
        with MemoryPipeline() as pipeline:
            self.assertIs(txaio.config.loop, pipeline.clock)
        self.assertIs(txaio.config.loop, before)
        network = MemoryNetwork.forTest(self)
        self.assertIs(txaio.config.loop, network.clock)
        self.doCleanups()
        self.assertIs(txaio.config.loop, before)

    def test_pipelineRestoresLoopAndLeavesNothing(self) -> None:
        """
        Stopping a pipeline closes every connection with a closing handshake, leaves
        nothing scheduled on its clock (nor on the global reactor), and gives txaio
        its loop back.
        """
        before, globalCalls = txaio.config.loop, len(reactor.getDelayedCalls())
        pipeline = MemoryPipeline(self)
        publisher = pipeline.addPublisher()
        subscriber = pipeline.addSubscriber()
        client = pipeline.connectClient(subscriber.factory, "/subscribe")
        pipeline.advance(Limits().pingInterval * 3)
        self.assertTrue(client.isOpen and publisher.link.protocol and subscriber.link.protocol)
        self.doCleanups()
        self.assertEqual(self.successResultOf(client.closed)[0], 1001)
        self.assertEqual((pipeline.network.connections, pipeline.clock.getDelayedCalls()), ([], []))
        self.assertIs(txaio.config.loop, before)
        self.assertEqual(len(reactor.getDelayedCalls()), globalCalls)

    def test_basicAuth(self) -> None:
        """
        The handshake really authenticates: the demo account is let in, a wrong
        password or none is refused with 401.
        """
        pipeline = MemoryPipeline(self)
        publisher = pipeline.addPublisher()
        self.assertTrue(pipeline.connectClient(publisher.factory, "/publish").isOpen)
        for credentials in [("hello", "wrong"), None]:
            client = pipeline.connectClient(publisher.factory, "/publish", credentials)
            failure = self.failureResultOf(client.opened, HandshakeFailed)
            self.assertEqual(failure.value.status, 401)

    def test_handshakeTimeoutOnClock(self) -> None:
        """
        Autobahn's opening handshake timeout runs on the test's clock: a peer that
        connects and says nothing is dropped once it has passed, not before.
        """
        pipeline = MemoryPipeline(self)
        connection = pipeline.network.connect(pipeline.msgqueue, Factory.forProtocol(Protocol))
        pipeline.advance(Limits().handshakeTimeout - 0.5)
        self.assertFalse(connection.finished)
        pipeline.advance(1)
        self.assertTrue(connection.finished)

    def test_cut(self) -> None:
        """
        A cut connection is lost at both ends at once, with what was in flight; a
        link reconnects after its retry delay.
        """
        pipeline = MemoryPipeline(self, retryDelay=2.0)
        publisher = pipeline.addPublisher()
        first = publisher.link.protocol
        first.sendMessage(b"never delivered")
        pipeline.msgqueueEndpoint.cutAll()
        self.assertEqual(pipeline.msgqueue.connections, set())
        self.assertIsNone(publisher.link.protocol)
        pipeline.advance(1.9)
        self.assertEqual(pipeline.msgqueueEndpoint.attempts, 1)
        pipeline.advance(0.1)
        self.assertEqual(pipeline.msgqueueEndpoint.attempts, 2)
        self.assertTrue(publisher.link.protocol.isOpen)
        self.assertIsNot(publisher.link.protocol, first)

    def test_refusing(self) -> None:
        """
        While msgqueue's endpoint refuses, the link retries at its delay; it opens at
        the first attempt after msgqueue is back.
        """
        pipeline = MemoryPipeline(self)
        pipeline.msgqueueEndpoint.refusing = True
        subscriber = pipeline.addSubscriber()
        pipeline.advance(3 * pipeline.retryDelay)
        self.assertEqual((pipeline.msgqueueEndpoint.attempts, subscriber.link.protocol), (4, None))
        pipeline.msgqueueEndpoint.refusing = False
        pipeline.advance(pipeline.retryDelay)
        self.assertTrue(subscriber.link.protocol.isOpen)

    def test_pausedReader(self) -> None:
        """
        A transport paused for reading (flow control) is given nothing until resumed.
        """
        pipeline = MemoryPipeline(self)
        subscriber = pipeline.addSubscriber()
        publisher = pipeline.addPublisher()
        reading = pipeline.connectClient(subscriber.factory, "/subscribe")
        reading.sendJSON({"Topic": "t", "Content": "sub", "Id": 1})
        pipeline.flush()
        self.assertEqual(reading.receivedJSON(), [{"Ack": 1}])
        reading.transport.pauseProducing()
        pipeline.connectClient(publisher.factory, "/publish").sendJSON({"Topic": "t", "Content": "x"})
        pipeline.flush()
        self.assertEqual(reading.receivedJSON(), [])
        reading.transport.resumeProducing()
        pipeline.flush()
        self.assertEqual(contents(reading.receivedJSON()), ["x"])


class CrossStageTests(SynchronousTestCase):
    """
    What users rely on across the stages, in memory: each test joins real stages.
    """

    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.store = GatedStore(clock.seconds)
        self.pipeline = MemoryPipeline(self, clock=clock, store=self.store)
        self.publisher = self.pipeline.addPublisher()
        self.subscriber = self.pipeline.addSubscriber()

    def subscribed(self, *topics: str):
        client = self.pipeline.connectClient(self.subscriber.factory, "/subscribe")
        for number, topic in enumerate(topics):
            client.sendJSON({"Topic": topic, "Content": "sub", "Id": number})
        self.pipeline.flush()
        self.assertEqual(client.receivedJSON(), [{"Ack": number} for number in range(len(topics))])
        return client

    def publishing(self):
        return self.pipeline.connectClient(self.publisher.factory, "/publish")

    def test_ackOnceStored(self) -> None:
        """
        A client's Id is acknowledged only once msgqueue has stored the message, not
        when the publisher took it nor when msgqueue read it.
        """
        client = self.publishing()
        self.store.holding = True
        client.sendJSON({"Topic": "news", "Content": "hi", "Id": "a1"})
        self.pipeline.flush()
        self.assertEqual((len(self.store.waiting), self.store.retained), (1, 0))
        self.assertEqual(client.receivedJSON(), [])
        self.assertEqual(self.publisher.forwarder.held, 1)
        self.store.letThrough()
        self.pipeline.flush()
        self.assertEqual(client.receivedJSON(), [{"Ack": "a1"}])
        self.assertEqual((self.store.retained, self.publisher.forwarder.held), (1, 0))

    def test_fanOut(self) -> None:
        """
        A message published reaches every client subscribed to its topic, once, and
        no other; the subscriber acknowledges it to msgqueue.
        """
        first, second, other = self.subscribed("news"), self.subscribed("news", "sport"), self.subscribed("sport")
        self.publishing().sendJSON({"Topic": "news", "Content": "hello"})
        self.pipeline.flush()
        for client in (first, second):
            received = [(m["Topic"], m["Content"], m["Offset"]) for m in client.receivedJSON()]
            self.assertEqual(received, [("news", "hello", 1)])
        self.assertEqual(other.receivedJSON(), [])
        self.pipeline.advance(1)
        self.assertEqual(self.successResultOf(self.store.pending("subscribers")), [])

    def test_resendAfterLinkLost(self) -> None:
        """
        msgqueue stored a message but its Ack was lost with the link: the publisher
        sends it again once the link is back, msgqueue recognises the producer's
        sequence number, and the client gets one Ack, subscribers one copy.
        """
        reader = self.subscribed("t")
        client = self.publishing()
        self.store.holding = True
        client.sendJSON({"Topic": "t", "Content": "once", "Id": 7})
        self.pipeline.flush()
        self.pipeline.msgqueueEndpoint.cutAll()
        self.store.letThrough()
        self.pipeline.flush()
        self.assertEqual((client.receivedJSON(), self.publisher.forwarder.held), ([], 1))
        self.pipeline.advance(self.pipeline.retryDelay)
        self.assertTrue(self.publisher.link.protocol.isOpen)
        self.assertEqual(client.receivedJSON(), [{"Ack": 7}])
        self.assertEqual(self.store.retained, 1)
        self.assertEqual(contents(reader.receivedJSON()), ["once"])
        self.pipeline.advance(5)
        self.assertEqual((client.receivedJSON(), reader.receivedJSON()), ([], []))

    def test_heldWhileQueueAway(self) -> None:
        """
        Messages published while msgqueue is away are held, unacknowledged, and go
        through in order once it is back: acknowledged and delivered.
        """
        reader = self.subscribed("t")
        self.pipeline.msgqueueEndpoint.refusing = True
        self.pipeline.msgqueueEndpoint.cutAll()
        client = self.publishing()
        for number in range(3):
            client.sendJSON({"Topic": "t", "Content": str(number), "Id": number})
        self.pipeline.advance(3 * self.pipeline.retryDelay)
        self.assertEqual((client.receivedJSON(), self.publisher.forwarder.held), ([], 3))
        self.pipeline.msgqueueEndpoint.refusing = False
        self.pipeline.advance(self.pipeline.retryDelay)
        self.assertEqual(client.receivedJSON(), [{"Ack": 0}, {"Ack": 1}, {"Ack": 2}])
        self.assertEqual(contents(reader.receivedJSON()), ["0", "1", "2"])

    def test_redeliveryNotRepeated(self) -> None:
        """
        The subscriber's link breaks after a delivery and before its acknowledgement:
        msgqueue delivers the message again on the new link, and the subscriber's
        clients still see it once.
        """
        reader = self.subscribed("t")
        self.publishing().sendJSON({"Topic": "t", "Content": "x"})
        self.pipeline.flush()
        self.assertEqual(contents(reader.receivedJSON()), ["x"])
        self.assertEqual(len(self.successResultOf(self.store.pending("subscribers"))), 1)
        self.pipeline.msgqueueEndpoint.cutAll()
        self.pipeline.advance(self.pipeline.retryDelay + 1)
        self.assertTrue(self.subscriber.link.protocol.isOpen)
        self.assertEqual(self.successResultOf(self.store.pending("subscribers")), [])
        self.assertEqual(reader.receivedJSON(), [])
