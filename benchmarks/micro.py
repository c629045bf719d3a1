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

from wsqueue import wire
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
    "wire.encodeDelivery": (wireEncodeDelivery, 1, False),
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
