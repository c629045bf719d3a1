"""
Which Redis client the Redis store uses: txredisapi (Twisted-native) against
redis-py's asyncio client under Twisted's asyncio reactor, on the operations the
store's hot path makes, against a real redis-server.

  python benchmarks/redis_clients.py txredisapi PORT
  python benchmarks/redis_clients.py redis-py PORT

Each run prints, for 100-byte messages:
  - one-at-a-time: sequential EVALSHA round trips per second (an append of one
    message and its answer: what latency a lone publisher sees);
  - 64-in-flight: the same with 64 calls outstanding (what throughput many
    concurrent pushes and reads see);
  - batch: XADD of 1,000 entries per EVALSHA call, entries per second.

Needs a virtual environment with twisted, txredisapi, redis and hiredis installed
(not the project's own: redis-py is not one of wsqueue's dependencies).
"""

from __future__ import annotations

import sys
import time

SCRIPT = """
local n = 0
for i = 1, #ARGV do
  n = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], n .. '-0', 't', 'topic', 'c', ARGV[i])
end
return n
"""
PAYLOAD = "x" * 100
SEQUENTIAL = 5000
CONCURRENT = 64
INFLIGHT_TOTAL = 50_000
BATCHES = 50
BATCH = 1000


async def measure(call) -> dict[str, float]:
    """
    Run the three measurements with C{call(keys, args)}, an awaitable EVALSHA.
    """
    from twisted.internet.defer import gatherResults

    figures = {}
    started = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await call([PAYLOAD])
    figures["one-at-a-time calls/s"] = SEQUENTIAL / (time.perf_counter() - started)

    started = time.perf_counter()
    for _ in range(INFLIGHT_TOTAL // CONCURRENT):
        await gatherResults([call([PAYLOAD]) for _ in range(CONCURRENT)])
    figures["64-in-flight calls/s"] = INFLIGHT_TOTAL / (time.perf_counter() - started)

    started = time.perf_counter()
    for _ in range(BATCHES):
        await call([PAYLOAD] * BATCH)
    figures["batch entries/s"] = BATCHES * BATCH / (time.perf_counter() - started)
    return figures


def runTxredisapi(port: int) -> None:
    import txredisapi
    from twisted.internet import reactor

    async def main() -> None:
        connection = await txredisapi.Connection("127.0.0.1", port)
        await connection.execute_command("FLUSHDB")
        sha = await connection.execute_command("SCRIPT", "LOAD", SCRIPT)

        def call(args):
            return connection.execute_command("EVALSHA", sha, 2, "bench:s", "bench:n", *args)

        report(await measure(call))
        await connection.disconnect()

    finish(reactor, main)


def runRedisPy(port: int) -> None:
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    import redis.asyncio
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    async def main() -> None:
        client = redis.asyncio.Redis(host="127.0.0.1", port=port)
        await Deferred.fromFuture(__import__("asyncio").ensure_future(client.flushdb()))
        sha = await Deferred.fromFuture(__import__("asyncio").ensure_future(client.script_load(SCRIPT)))

        def call(args):
            return Deferred.fromFuture(
                __import__("asyncio").ensure_future(client.evalsha(sha, 2, "bench:s", "bench:n", *args))
            )

        report(await measure(call))
        await Deferred.fromFuture(__import__("asyncio").ensure_future(client.aclose()))

    finish(reactor, main)


def report(figures: dict[str, float]) -> None:
    for name, value in figures.items():
        print(f"{name:24} {value:12,.0f}")


def finish(reactor, main) -> None:
    def start() -> None:
        d = Deferred.fromCoroutine(main())
        d.addErrback(lambda failure: print(failure.getTraceback()))
        d.addBoth(lambda _: reactor.stop())

    from twisted.internet.defer import Deferred

    reactor.callWhenRunning(start)
    reactor.run()


if __name__ == "__main__":
    which, port = sys.argv[1], int(sys.argv[2])
    {"txredisapi": runTxredisapi, "redis-py": runRedisPy}[which](port)
