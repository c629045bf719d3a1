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

from wsqueue import frames, wire
from wsqueue.store.memory import MemoryStore
from wsqueue.store.sqlite import SQLiteStore
from wsqueue.subscriber import TopicRegistry

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
    "frames.readFrames (per client frame, 100 per read)": (framesReadClient100, 100, False),
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
