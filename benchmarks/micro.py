"""
Micro-benchmarks of wsqueue's hot functions, to see what one change buys.

    .venv/bin/python benchmarks/micro.py            # every benchmark
    .venv/bin/python benchmarks/micro.py wire store  # those whose name starts so

Each line: the benchmark, the time per operation (best of several repeats, so that
noise from the other core counts less) and operations per second.  Run from the
repository root so that the source tree is what is measured.
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from wsqueue import frames, wire
from wsqueue.msgqueue import PopHandler, PushHandler
from wsqueue.publisher import Forwarder, _Held
from wsqueue.store.base import Entry
from wsqueue.store.memory import MemoryStore
from wsqueue.store.sqlite import SQLiteStore
from wsqueue.subscriber import QueueReader, TopicRegistry

CONTENT = "x" * 100
PUBLISH = wire.encode({"Topic": "bench.S1w", "Content": CONTENT, "Id": 12345})


def wireParsePublish() -> None:
    wire.parsePublish(PUBLISH)


def wireParseSubscribe() -> None:
    wire.parseSubscribe(b"sub bench.S1w")


def wireEncodeDelivery() -> None:
    wire.encode({"Topic": "bench.S1w", "Content": CONTENT, "Offset": 123456, "Epoch": "0123456789abcdef"})


def wireDelivery() -> None:
    frames.textFrame(wire.delivery("bench.S1w", CONTENT, 123456, "0123456789abcdef"))


PUSH_BATCH = wire.encode({"Messages": [[number, "bench.S1w", CONTENT] for number in range(100)]})


def wireParsePush100() -> None:
    wire.parsePush(PUSH_BATCH)


BATCH_ENTRIES = [[number, "bench.S1w", CONTENT] for number in range(1, 101)]


def wirePushBatch100() -> None:
    wire.pushBatch(BATCH_ENTRIES)


def wireBatchEntryBytes() -> None:
    wire.batchEntryBytes("bench.S1w", CONTENT)


def wireDeliveryBatch100() -> None:
    wire.deliveryBatch("0123456789abcdef", BATCH_ENTRIES)


def wireParseDeliveries100() -> None:
    wire.parseDeliveries(POP_BATCH)


def wireParsePushReply() -> None:
    wire.parsePushReply(b'{"Ack":123456}')


def wireParseOffsetAck() -> None:
    wire.parseOffsetAck(b'{"Ack":123456}')


def _clientFrame(payload: bytes, key: bytes = b"\x1f\x2e\x3d\x4c") -> bytes:
    assert 126 <= len(payload) < 65536
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big") + key + masked


CLIENT_FRAMES = _clientFrame(PUBLISH) * 100


def framesReadClient100() -> None:
    messages, _, _ = frames.readFrames(CLIENT_FRAMES, 1024 * 1024, True)
    assert len(messages) == 100


_registry = TopicRegistry()
for number in range(1000):
    _registry.subscribe(f"topic.{number}", object())


def topicLookup() -> None:
    _registry.subscribers("topic.500")


class _Sink:
    """A link or connection that takes every frame and drops it."""

    isOpen = True

    def send(self, payload: bytes) -> bool:
        return True

    def sendError(self, error: wire.WireError) -> None:
        pass

    def sendFrames(self, data: bytes) -> None:
        pass


EPOCH = "0123456789abcdef"
POP_BATCH = wire.encode({"Epoch": EPOCH, "Messages": [[number, "bench.S1w", CONTENT] for number in range(1, 101)]})


def _reader(subscribed: bool) -> Callable[[], None]:
    """
    The subscriber's reader taking msgqueue's batch frames of 100 messages, each
    new to it (handed to one client, or to none).
    """
    registry = TopicRegistry()
    if subscribed:
        registry.subscribe("bench.S1w", _Sink())
    return _receiving(registry, POP_BATCH)


def _receiving(registry: TopicRegistry, batch: bytes) -> Callable[[], None]:
    """
    A reader over C{registry} taking C{batch} (a frame from msgqueue) again and
    again, each time as new.
    """
    reader = QueueReader(registry, Clock())
    link = _Sink()
    reader.linkOpened(link)

    def received() -> None:
        reader._recent.clear()
        reader._recentOrder.clear()
        reader.linkReceived(link, batch, False)

    return received


def subscriberReceived100() -> Callable[[], None]:
    return _reader(True)


def subscriberReceivedUnsubscribed100() -> Callable[[], None]:
    return _reader(False)


def _fanOut(patterns: bool, topics: int) -> Callable[[], None]:
    """
    The subscriber's reader fanning a batch of 100 messages out to 10,000 clients
    spread over C{topics} subscriptions of 10,000 / C{topics} clients each: exact
    topics C{bench.N.x}, or the patterns C{bench.N.*} (C{patterns}).  The messages
    go to 100 different topics (to one, with a single subscription), so each batch
    is 100 x (10,000 / topics) deliveries.
    """
    registry = TopicRegistry()
    perTopic = 10_000 // topics
    for number in range(topics):
        for _ in range(perTopic):
            registry.subscribe(f"bench.{number}.*" if patterns else f"bench.{number}.x", _Sink())
    batch = wire.encode({"Epoch": EPOCH, "Messages": [
        [offset, f"bench.{offset % min(topics, 100)}.x", CONTENT] for offset in range(1, 101)]})
    return _receiving(registry, batch)


def publisherFlush100() -> Callable[[], None]:
    """
    The publisher's forwarder sending 100 held messages to msgqueue in one batch.
    """
    forwarder = Forwarder(Clock())
    forwarder.linkOpened(_Sink())
    held = [_Held(number, "bench.S1w", CONTENT, None, number, True) for number in range(1, 101)]

    def flush() -> None:
        forwarder._unsent.extend(held)
        forwarder._flush()
        forwarder._inFlight.clear()

    return flush


def _popHandler(batch: bool) -> PopHandler:
    handler = PopHandler.__new__(PopHandler)
    handler.connection = _Sink()
    handler.batch = batch
    return handler


ENTRIES = [Entry(number, "bench.S1w", CONTENT) for number in range(1, 101)]


def msgqueueDeliverBatch100() -> Callable[[], None]:
    handler = _popHandler(True)
    return lambda: handler.deliver(ENTRIES, EPOCH)


def msgqueueDeliverSingle100() -> Callable[[], None]:
    handler = _popHandler(False)
    return lambda: handler.deliver(ENTRIES, EPOCH)


class _Broker:
    """Stores nothing, at once."""

    def refusal(self) -> None:
        return None

    def push(self, messages, producer, seqs):
        return succeed([None] * len(messages))


def msgqueuePushReceived100() -> Callable[[], None]:
    """
    msgqueue taking a publisher's batch of 100 and acknowledging it.
    """
    handler = PushHandler.__new__(PushHandler)
    handler.connection = _Sink()
    handler.broker = _Broker()
    handler.producer = "bench"
    return lambda: handler.received(PUSH_BATCH, False)


def _storeCycle(store, batch: int) -> Callable[[], None]:
    """
    Append C{batch} messages, read them for a group and acknowledge them.
    """
    messages = [("bench", CONTENT)] * batch

    def cycle() -> None:
        store.append(messages)
        entries = store.readGroup("g", "c", batch).result
        store.ack("g", [entry.offset for entry in entries])

    return cycle


def storeMemory100() -> Callable[[], None]:
    return _storeCycle(MemoryStore(), 100)


def storeSqlite100() -> Callable[[], None]:
    directory = tempfile.mkdtemp(prefix="wsqueue-bench-")
    return _storeCycle(SQLiteStore(os.path.join(directory, "bench.sqlite3"), runInline=True), 100)


BENCHMARKS: dict[str, tuple[Callable[[], object], int, bool]] = {
    # name: (function or factory, operations per call, is it a factory)
    "wire.parsePublish": (wireParsePublish, 1, False),
    "wire.parseSubscribe": (wireParseSubscribe, 1, False),
    "wire.encodeDelivery (json.dumps of the dict)": (wireEncodeDelivery, 1, False),
    "wire.delivery + frames.textFrame (what the fan-out does)": (wireDelivery, 1, False),
    "wire.parsePush (per message, batch of 100)": (wireParsePush100, 100, False),
    "wire.pushBatch (per message, batch of 100)": (wirePushBatch100, 100, False),
    "wire.batchEntryBytes": (wireBatchEntryBytes, 1, False),
    "wire.deliveryBatch (per message, batch of 100)": (wireDeliveryBatch100, 100, False),
    "wire.parseDeliveries (per message, batch of 100)": (wireParseDeliveries100, 100, False),
    "wire.parsePushReply (an Ack)": (wireParsePushReply, 1, False),
    "wire.parseOffsetAck": (wireParseOffsetAck, 1, False),
    "frames.readFrames (per client frame, 100 per read)": (framesReadClient100, 100, False),
    "subscriber.linkReceived (per message, batch of 100, one client)": (subscriberReceived100, 100, True),
    "subscriber.linkReceived (per message, batch of 100, no client)": (subscriberReceivedUnsubscribed100, 100, True),
    "subscriber.fanOut 10,000 clients on 1,000 topics (per delivery)": (lambda: _fanOut(False, 1000), 1000, True),
    "subscriber.fanOut 10,000 clients on 1,000 patterns (per delivery)": (lambda: _fanOut(True, 1000), 1000, True),
    "subscriber.fanOut 10,000 clients on 1 topic (per delivery)": (lambda: _fanOut(False, 1), 1_000_000, True),
    "subscriber.fanOut 10,000 clients on 1 pattern (per delivery)": (lambda: _fanOut(True, 1), 1_000_000, True),
    "publisher.flush (per message, batch of 100)": (publisherFlush100, 100, True),
    "msgqueue.deliver batch=1 (per message, 100 entries)": (msgqueueDeliverBatch100, 100, True),
    "msgqueue.deliver batch=0 (per message, 100 entries)": (msgqueueDeliverSingle100, 100, True),
    "msgqueue.push received (per message, batch of 100)": (msgqueuePushReceived100, 100, True),
    "topic.lookup (1000 topics)": (topicLookup, 1, False),
    "store.memory append+read+ack (per message, batches of 100)": (storeMemory100, 100, True),
    "store.sqlite append+read+ack (per message, batches of 100, fsync)": (storeSqlite100, 100, True),
}


def run(prefixes: list[str]) -> None:
    for name, (function, perCall, isFactory) in BENCHMARKS.items():
        if prefixes and not any(name.startswith(prefix) for prefix in prefixes):
            continue
        call = function() if isFactory else function
        timer = timeit.Timer(call)
        number, _ = timer.autorange()
        best = min(timer.repeat(repeat=5, number=number)) / (number * perCall)
        print(f"{name:70s} {best * 1e6:9.2f} us/op {1 / best:12,.0f} op/s")


if __name__ == "__main__":
    run(sys.argv[1:])
