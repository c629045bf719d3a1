"""
msgqueue over real loopback TLS: the Go project's per-service checks (starts, 401,
400, roundtrip) and the queue semantics wsqueue adds (groups, acknowledgements,
de-duplication, flow control, bad input).
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue import wire
from wsqueue.auth import basicHeader, makeAuthenticator
from wsqueue.broker import FULL_MESSAGE, QueueBroker
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.link import HandshakeFailed
from wsqueue.msgqueue import BATCH_FRAME_BYTES, PopHandler, PusherFlow, makeMsgQueueFactory
from wsqueue.server import Limits
from wsqueue.store.base import Entry
from wsqueue.store.memory import MemoryStore
from wsqueue.tap import msgqueue as msgqueueTap

from .helpers import Clients, listenTLS, nextFrame, nextJSON, noFrameWithin, rawRequest, upgradeRequest, waitFor


def message(topic: str, content: str, requestId=None) -> bytes:
    frame = {"Topic": topic, "Content": content}
    if requestId is not None:
        frame["Id"] = requestId
    return json.dumps(frame).encode()


NOT_A_PUSH = 'frame must be a message object, a non-empty array of them, or {"Messages": [[Id, Topic, Content], ...]}'


class MsgQueueTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.broker = QueueBroker(MemoryStore(), reactor, maxQueued=50, maxInFlight=3)
        self.addCleanup(self.broker.stop)
        self.factory = makeMsgQueueFactory(self.broker, makeAuthenticator(None, reactor), Limits(maxMessageSize=2048), reactor)
        self.port = listenTLS(self, self.factory)
        self.clients = Clients(self)

    async def test_pushThenPop(self) -> None:
        """
        A pushed message is acknowledged and handed to a popper with its offset and epoch.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        pusher.sendMessage(message("news", "hello", 7))
        self.assertEqual(await nextJSON(pusher), {"Ack": 7})
        popper = await self.clients.connect(self.port, "/popmsg")
        frame = await nextJSON(popper)
        self.assertEqual(frame, {"Topic": "news", "Content": "hello", "Offset": 1, "Epoch": self.broker.store.epoch})

    async def test_fifoOrder(self) -> None:
        """
        Messages come out in the order they went in, across frames and batches.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        pusher.sendMessage(message("t", "0"))
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": str(i)} for i in range(1, 5)]).encode())
        pusher.sendMessage(message("t", "5", "last"))
        self.assertEqual(await nextJSON(pusher), {"Ack": "last"})
        popper = await self.clients.connect(self.port, "/popmsg")
        received = [(await nextJSON(popper))["Content"] for _ in range(6)]
        self.assertEqual(received, [str(i) for i in range(6)])

    async def test_wrongCredentials(self) -> None:
        """
        Wrong or missing credentials get 401 with a Basic challenge, on every endpoint.
        """
        for path in ("/pushmsg", "/popmsg"):
            for authorization in (None, basicHeader("fail", "test"), "Bearer x"):
                response = await rawRequest(self.port, upgradeRequest(self.port, path, authorization))
                self.assertTrue(response.startswith(b"HTTP/1.1 401"), response)
                self.assertIn(b'WWW-Authenticate: Basic realm="wsqueue"', response)

    async def test_wrongCredentialsClient(self) -> None:
        """
        A WebSocket client with wrong credentials sees a failed handshake with status 401.
        """
        e = await self.assertFailure(self.clients.connect(self.port, "/pushmsg", "hello", "wrong"), HandshakeFailed)
        self.assertEqual(e.status, 401)

    async def test_notWebSocket(self) -> None:
        """
        A plain HTTPS GET with good credentials gets 400.
        """
        response = await rawRequest(self.port, upgradeRequest(self.port, "/pushmsg", basicHeader("hello", "test"), upgrade=False))
        self.assertTrue(response.startswith(b"HTTP/1.1 400"), response)

    async def test_unknownPath(self) -> None:
        """
        An unknown endpoint gets 404 naming the endpoints that exist.
        """
        response = await rawRequest(self.port, upgradeRequest(self.port, "/nope", basicHeader("hello", "test")))
        self.assertTrue(response.startswith(b"HTTP/1.1 404"), response)
        self.assertIn(b"/popmsg", response)

    async def test_badParameters(self) -> None:
        """
        A bad group name, ack mode or producer name is refused with 400.
        """
        for path in ("/popmsg?group=a%20b", "/popmsg?ack=sometimes", "/pushmsg?producer=x%20y"):
            e = await self.assertFailure(self.clients.connect(self.port, path), HandshakeFailed)
            self.assertEqual(e.status, 400, path)

    async def test_badInputKeepsConnection(self) -> None:
        """
        Bad frames get an Error naming the problem and the connection stays usable.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        cases = [
            (b"not json", "frame is not valid JSON"),
            (b"[]", NOT_A_PUSH),
            (b"42", NOT_A_PUSH),
            (b'{"Messages": []}', NOT_A_PUSH),
            (b'{"Messages": [[1, "t"]]}', "each entry of Messages must be [Id, Topic, Content]"),
            (b'{"Messages": [[{}, "t", "c"]]}', "Id must be a string or a finite number"),
            (b'{"Topic": "", "Content": "x", "Id": 3}', "Topic must not be empty"),
            (b'{"Topic": "t", "Content": 5}', "Content must be a string"),
        ]
        for frame, reason in cases:
            pusher.sendMessage(frame)
            self.assertEqual((await nextJSON(pusher))["Error"], reason)
        pusher.sendMessage(b"\x00\x01", isBinary=True)
        self.assertIn("binary", (await nextJSON(pusher))["Error"])
        pusher.sendMessage(message("t", "ok", 1))
        self.assertEqual(await nextJSON(pusher), {"Ack": 1})

    async def test_batchWithBadEntry(self) -> None:
        """
        In a batch, a bad message is refused by its Id and the others are stored.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": "a", "Id": 1}, {"Topic": "t", "Id": 2}, {"Topic": "t", "Content": "c", "Id": 3}]).encode())
        self.assertEqual(await nextJSON(pusher), {"Error": "Content must be a string", "Id": 2})
        self.assertEqual(await nextJSON(pusher), {"Ack": 3})
        self.assertEqual(self.broker.store.retained, 2)

    async def test_compactBatch(self) -> None:
        """
        The publisher's batch C{{"Messages": [[Id, Topic, Content], ...]}} is stored in
        order and acknowledged by its last Id; a bad entry is refused by its Id alone.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg?producer=p1")
        popper = await self.clients.connect(self.port, "/popmsg")
        pusher.sendMessage(json.dumps({"Messages": [[1, "t", "a"], [2, "t", 5], [3, "u", "c\u00e9"]]}).encode())
        self.assertEqual(await nextJSON(pusher), {"Error": "Content must be a string", "Id": 2})
        self.assertEqual(await nextJSON(pusher), {"Ack": 3})
        self.assertEqual([(m["Topic"], m["Content"]) for m in [await nextJSON(popper), await nextJSON(popper)]],
                         [("t", "a"), ("u", "c\u00e9")])
        pusher.sendMessage(json.dumps({"Messages": [[3, "u", "c\u00e9"], [4, "t", "d"]]}).encode())
        self.assertEqual(await nextJSON(pusher), {"Ack": 4})
        self.assertEqual((await nextJSON(popper))["Content"], "d")
        await noFrameWithin(popper, 0.1)

    async def test_tooBig(self) -> None:
        """
        A message over the size limit closes the connection with 1009.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        pusher.sendMessage(message("t", "x" * 10_000))
        self.assertIsNone(await nextFrame(pusher))
        code, _ = await pusher.closed
        self.assertEqual(code, 1009)

    async def test_groupsEachGetEverything(self) -> None:
        """
        Every consumer group receives every message.
        """
        a = await self.clients.connect(self.port, "/popmsg?group=a")
        b = await self.clients.connect(self.port, "/popmsg?group=b")
        pusher = await self.clients.connect(self.port, "/pushmsg")
        for i in range(5):
            pusher.sendMessage(message("t", str(i)))
        for popper in (a, b):
            self.assertEqual([(await nextJSON(popper))["Content"] for _ in range(5)], [str(i) for i in range(5)])

    async def test_groupMembersShare(self) -> None:
        """
        Consumers of one group share the messages: each goes to exactly one of them.
        """
        a = await self.clients.connect(self.port, "/popmsg?group=g")
        b = await self.clients.connect(self.port, "/popmsg?group=g")
        await waitFor(lambda: len(self.broker._byConsumer) == 2, what="both consumers registered")
        pusher = await self.clients.connect(self.port, "/pushmsg")
        for i in range(20):
            pusher.sendMessage(message("t", str(i), i))
            await nextJSON(pusher)
        await waitFor(lambda: len(a.frames.pending) + len(b.frames.pending) == 20, what="20 deliveries")
        contents = [json.loads(f)["Content"] for f in a.frames.pending + b.frames.pending]
        self.assertEqual(sorted(contents, key=int), [str(i) for i in range(20)])
        self.assertTrue(a.frames.pending and b.frames.pending)

    async def test_explicitAckWindowAndRedelivery(self) -> None:
        """
        An ack=explicit consumer holds at most --max-in-flight messages; what it did not
        acknowledge goes to the next consumer of its group when it leaves.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        for i in range(5):
            pusher.sendMessage(message("t", str(i), i))
            await nextJSON(pusher)
        first = await self.clients.connect(self.port, "/popmsg?group=g&ack=explicit")
        got = [await nextJSON(first) for _ in range(3)]
        await noFrameWithin(first, 0.2)
        first.sendMessage(json.dumps({"Ack": got[0]["Offset"]}).encode())
        fourth = await nextJSON(first)
        self.assertEqual(fourth["Content"], "3")
        first.sendClose(1000)
        await first.closed
        second = await self.clients.connect(self.port, "/popmsg?group=g&ack=explicit")
        again = [(await nextJSON(second))["Content"] for _ in range(3)]
        self.assertEqual(again, ["1", "2", "3"])

    async def test_batchDelivery(self) -> None:
        """
        A consumer that asks for batch=1 gets many messages per frame, as
        {"Epoch", "Messages": [[offset, topic, content], ...]}, in order.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": str(i)} for i in range(5)] + [{"Topic": "u", "Content": "5", "Id": 1}]).encode())
        self.assertEqual(await nextJSON(pusher), {"Ack": 1})
        popper = await self.clients.connect(self.port, "/popmsg?group=b&ack=explicit&batch=1")
        frame = await nextJSON(popper)
        self.assertEqual(frame["Epoch"], self.broker.store.epoch)
        self.assertEqual(frame["Messages"][:2], [[1, "t", "0"], [2, "t", "1"]])
        self.assertLessEqual(len(frame["Messages"]), 3)
        e = await self.assertFailure(self.clients.connect(self.port, "/popmsg?batch=yes"), HandshakeFailed)
        self.assertEqual(e.status, 400)

    async def test_ackModes(self) -> None:
        """
        Acks must be {"Ack": offset}; an ack=none consumer is told acks are not needed.
        """
        explicit = await self.clients.connect(self.port, "/popmsg?group=x&ack=explicit")
        explicit.sendMessage(b'{"Ack": "one"}')
        self.assertEqual(await nextJSON(explicit), {"Error": 'expected {"Ack": offset}'})
        # Nested past the recursion limit: an ordinary Error too, not "internal error".
        explicit.sendMessage(b"[" * 2500 + b"]" * 2500)
        self.assertEqual(await nextJSON(explicit), {"Error": 'expected {"Ack": offset}'})
        plain = await self.clients.connect(self.port, "/popmsg?group=y")
        plain.sendMessage(b'{"Ack": 1}')
        self.assertIn("ack=none", (await nextJSON(plain))["Error"])

    async def test_producerDuplicatesSkipped(self) -> None:
        """
        A named producer's resend of messages msgqueue already has is acknowledged but
        not stored twice.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg?producer=p1")
        batch = json.dumps([{"Topic": "t", "Content": str(i), "Id": i} for i in (1, 2, 3)]).encode()
        pusher.sendMessage(batch)
        self.assertEqual(await nextJSON(pusher), {"Ack": 3})
        pusher.sendClose(1000)
        await pusher.closed
        again = await self.clients.connect(self.port, "/pushmsg?producer=p1")
        again.sendMessage(batch)
        self.assertEqual(await nextJSON(again), {"Ack": 3})
        again.sendMessage(json.dumps([{"Topic": "t", "Content": "4", "Id": 4}]).encode())
        self.assertEqual(await nextJSON(again), {"Ack": 4})
        self.assertEqual(self.broker.store.retained, 4)
        again.sendMessage(message("t", "x", "not-a-number"))
        self.assertIn("integer", (await nextJSON(again))["Error"])

    async def test_fullQueuePausesPusher(self) -> None:
        """
        At --max-queued msgqueue stops reading from pushers (nothing is dropped) and
        resumes once consumers make room.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": str(i)} for i in range(50)] + [{"Topic": "t", "Content": "49", "Id": "full"}]).encode())
        self.assertEqual(await nextJSON(pusher), {"Ack": "full"})
        pusher.sendMessage(message("t", "late", "late"))
        await noFrameWithin(pusher, 0.3)
        popper = await self.clients.connect(self.port, "/popmsg")
        self.assertEqual(await nextJSON(pusher), {"Ack": "late"})
        contents = [(await nextJSON(popper))["Content"] for _ in range(52)]
        self.assertEqual(contents[-1], "late")

    async def test_refusedWhileStopping(self) -> None:
        """
        While msgqueue shuts down, every pushed message with an Id gets an Error with
        that Id, never an Ack, and nothing is stored.
        """
        pusher = await self.clients.connect(self.port, "/pushmsg")
        self.broker.stopping = True
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": "a", "Id": 1}, {"Topic": "t", "Content": "b", "Id": 2}]).encode())
        replies = [await nextJSON(pusher), await nextJSON(pusher)]
        self.assertEqual([(r["Id"], "shutting down" in r["Error"]) for r in replies], [(1, True), (2, True)])
        pusher.sendMessage(message("t", "no id"))
        self.assertIn("shutting down", (await nextJSON(pusher))["Error"])
        self.assertEqual(self.broker.store.retained, 0)


class BoundedPauseTests(TestCase):
    """
    A full queue pauses pushers for a bounded time only, then answers their
    messages with an Error, so that publishing clients hear why.
    """

    timeout = 20

    async def test_fullQueueRefusesAfterThePause(self) -> None:
        """
        At --max-queued the pusher is paused; after pauseLimit its messages are read
        and refused as full, by Id; once a consumer makes room they are acknowledged.
        """
        broker = QueueBroker(MemoryStore(), reactor, maxQueued=5, maxInFlight=3, pauseLimit=0.3)
        self.addCleanup(broker.stop)
        factory = makeMsgQueueFactory(broker, makeAuthenticator(None, reactor), Limits(), reactor)
        port = listenTLS(self, factory)
        clients = Clients(self)
        pusher = await clients.connect(port, "/pushmsg")
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": str(i), "Id": i} for i in range(5)]).encode())
        self.assertEqual(await nextJSON(pusher), {"Ack": 4})
        pusher.sendMessage(message("t", "late", "late"))
        self.assertEqual(await nextJSON(pusher), {"Error": FULL_MESSAGE, "Id": "late"})
        self.assertEqual(broker.store.retained, 5)
        popper = await clients.connect(port, "/popmsg")
        self.assertEqual([(await nextJSON(popper))["Content"] for _ in range(5)], ["0", "1", "2", "3", "4"])
        pusher.sendMessage(message("t", "again", "again"))
        self.assertEqual(await nextJSON(pusher), {"Ack": "again"})
        self.assertEqual((await nextJSON(popper))["Content"], "again")


class PusherFlowTests(SynchronousTestCase):
    """
    The broker pauses a pusher through its connection's pauseReading, which also
    suspends the ping timeout.
    """

    def test_pauseReading(self) -> None:
        class Connection:
            calls: list[str] = []

            def pauseReading(self) -> None:
                self.calls.append("pauseReading")

            def resumeReading(self) -> None:
                self.calls.append("resumeReading")

        connection = Connection()
        flow = PusherFlow(connection)
        flow.pauseProducing()
        flow.resumeProducing()
        self.assertEqual(connection.calls, ["pauseReading", "resumeReading"])


class TapTests(SynchronousTestCase):
    """
    msgqueue's options reach its broker: the absent groups' bound and the pause limit.
    """

    def build(self, *argv: str):
        folder = self.mktemp()
        makeDevelopmentCertificates(folder)
        options = msgqueueTap.Options()
        options.parseOptions(["--cert-dir", folder, "--store", "memory", *argv])
        return msgqueueTap.makeService(options, reactor=MemoryReactorClock())

    def test_defaults(self) -> None:
        """
        --max-group-backlog is half of --max-queued unless given; a pause lasts half
        of --ping-interval.
        """
        broker = self.build("--max-queued", "1000", "--ping-interval", "6").broker
        self.assertEqual((broker.maxGroupBacklog, broker.flow.pauseLimit), (500, 3.0))
        broker = self.build("--max-group-backlog", "7").broker
        self.assertEqual((broker.maxGroupBacklog, broker.flow.pauseLimit), (7, 10.0))
        self.assertIn("[default: half of --max-queued]", " ".join(msgqueueTap.Options().getUsage().split()))

    def test_maintenanceSurvivesStoreFailures(self) -> None:
        """
        The maintenance timer keeps running after the store failed in it.
        """
        service = self.build()
        reactor = service.broker.clock
        calls = []

        def failing(ackWait):
            calls.append(ackWait)
            raise OSError("disk I/O error")

        service.broker.store.releaseExpired = failing
        service.startService()
        for _ in range(3):
            reactor.advance(1)
        self.assertGreaterEqual(len(calls), 3)
        service.broker.stop()


class FailingStore(MemoryStore):
    """
    A store whose appends fail, as a full disk or a locked file would make them.
    """

    def append(self, messages, producer=None, seqs=None):
        return fail(OSError("disk full"))


class FailingStoreTests(TestCase):
    timeout = 20

    async def test_errorForEveryId(self) -> None:
        """
        When the store cannot append, every message of the frame with an Id gets an
        Error with that Id, and nothing is acknowledged.
        """
        broker = QueueBroker(FailingStore(), reactor)
        self.addCleanup(broker.stop)
        factory = makeMsgQueueFactory(broker, makeAuthenticator(None, reactor), Limits(), reactor)
        port = listenTLS(self, factory)
        pusher = await Clients(self).connect(port, "/pushmsg?producer=p")
        pusher.sendMessage(json.dumps([{"Topic": "t", "Content": str(i), "Id": i} for i in (1, 2)]).encode())
        replies = [await nextJSON(pusher), await nextJSON(pusher)]
        self.assertEqual(replies, [{"Error": "msgqueue could not store the message", "Id": i} for i in (1, 2)])
        await noFrameWithin(pusher, 0.1)

    async def test_failuresSummarised(self) -> None:
        """
        A store that fails every append (a full disk) is one log line for all
        pushers and frames, not one per frame.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        broker = QueueBroker(FailingStore(), reactor)
        self.addCleanup(broker.stop)
        factory = makeMsgQueueFactory(broker, makeAuthenticator(None, reactor), Limits(), reactor)
        port = listenTLS(self, factory)
        clients = Clients(self)
        pushers = [await clients.connect(port, "/pushmsg") for _ in range(2)]
        for number in range(20):
            pushers[number % 2].sendMessage(message("t", "x", number))
        replies = [await nextJSON(pushers[number % 2]) for number in range(20)]
        self.assertEqual(len([reply for reply in replies if "Error" in reply]), 20)
        errors = [e for e in events if e["log_level"] == LogLevel.error and "storing" in e["log_format"]]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["error"], "OSError: disk full")


class _Sent:
    """A consumer's connection that records what msgqueue sends it."""

    peer = "tcp:127.0.0.1:1"

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.frames.append(payload)


class _Request:
    def __init__(self, **params: str) -> None:
        self.params = {name: [value] for name, value in params.items()}


class DeliveryFrameTests(SynchronousTestCase):
    """
    The frames L{PopHandler.deliver} sends, byte for byte: subscribers of other
    versions read them.
    """

    def deliver(self, entries: list[Entry], **params: str) -> list[bytes]:
        connection = _Sent()
        PopHandler(connection, _Request(**params), None).deliver(entries, "ep")
        return connection.frames

    def test_single(self) -> None:
        """
        Without batch=1, each message is its own {"Topic", "Content", "Offset", "Epoch"}.
        """
        entries = [Entry(1, "t", "a"), Entry(2, "u\u00e9", 'q"\n', deliveries=3)]
        self.assertEqual(self.deliver(entries), [
            wire.encode({"Topic": "t", "Content": "a", "Offset": 1, "Epoch": "ep"}),
            wire.encode({"Topic": "u\u00e9", "Content": 'q"\n', "Offset": 2, "Epoch": "ep"}),
        ])

    def test_batch(self) -> None:
        """
        With batch=1, messages go as {"Epoch", "Messages": [[offset, topic, content],
        ...]} (the delivery count is not sent), a frame ending with the message that
        brings its estimated size to BATCH_FRAME_BYTES.
        """
        content = "x" * 1000
        perFrame = -(-BATCH_FRAME_BYTES // wire.batchEntryBytes("t", content))
        entries = [Entry(offset, "t", content, deliveries=2) for offset in range(1, 2 * perFrame + 2)]
        frames = self.deliver(entries, batch="1")
        expected = [[[entry.offset, entry.topic, entry.content] for entry in part]
                    for part in (entries[:perFrame], entries[perFrame : 2 * perFrame], entries[2 * perFrame :])]
        self.assertEqual(frames, [wire.encode({"Epoch": "ep", "Messages": messages}) for messages in expected])
        self.assertEqual(self.deliver([Entry(7, "t", "\u00e9")], batch="1"), [b'{"Epoch":"ep","Messages":[[7,"t","\xc3\xa9"]]}'])
