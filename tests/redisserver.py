"""
A real C{redis-server} for tests: started on a free port in a temporary folder,
stopped in cleanup.  Tests that need it fail (never skip) when it is missing: CI
installs it.

L{RedisServer.command} is a tiny synchronous RESP client, independent of the
store's client library, for setting up and inspecting the server from a test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

REDIS_SERVER = "redis-server"
START_TIMEOUT = 10.0


class RedisServerMissing(AssertionError):
    """
    C{redis-server} is not installed: the Redis store's tests cannot run.
    """


def freePort() -> int:
    """
    A TCP port nothing listens on now (asked of the kernel).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _encode(*args: Any) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def reply(self) -> Any:
        line = self._file.readline()
        if not line:
            raise ConnectionError("redis-server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = self._file.read(int(rest) + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            return None if int(rest) < 0 else [self.reply() for _ in range(int(rest))]
        raise ValueError(f"unexpected reply {line!r}")


class RedisReplyError(Exception):
    """
    An error reply from the server to L{RedisServer.command}.
    """


class RedisServer:
    """
    One C{redis-server} process on 127.0.0.1, its data in C{folder}; or a Sentinel
    watching the master C{sentinelFor} (its name and port).

    @param appendOnly: write an append-only file, fsynced after every write
        (C{appendfsync always}): what a restart test needs to lose nothing.
    @param sentinelQuorum: for a Sentinel, how many Sentinels must agree that the
        master is down before a fail-over.
    @param sentinelOptions: for a Sentinel, more settings for that master, each
        written as C{sentinel OPTION MASTER VALUE} (C{("down-after-milliseconds",
        1000)}, C{("failover-timeout", 3000)}).
    """

    def __init__(
        self, folder: str | None = None, appendOnly: bool = False, port: int | None = None, extra: tuple = (),
        sentinelFor: tuple[str, int] | None = None, sentinelQuorum: int = 1,
        sentinelOptions: tuple[tuple[str, object], ...] = (),
    ) -> None:
        if shutil.which(REDIS_SERVER) is None:
            raise RedisServerMissing(
                f"{REDIS_SERVER} is not installed: the Redis store tests need it (apt-get install redis-server)"
            )
        self.folder = folder or tempfile.mkdtemp(prefix="wsqueue-redis-")
        self.appendOnly = appendOnly
        self.port = port or freePort()
        self.extra = extra
        self.sentinelFor = sentinelFor
        self.sentinelQuorum = sentinelQuorum
        self.sentinelOptions = sentinelOptions
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """
        Start the server and wait until it answers PING (polled, with a deadline).
        """
        config = []
        if self.sentinelFor is not None:
            # A Sentinel watching master NAME at 127.0.0.1:PORT (it rewrites its config file).
            config = [os.path.join(self.folder, "sentinel.conf"), "--sentinel"]
            name, port = self.sentinelFor
            with open(config[0], "w") as f:
                f.write(f"sentinel monitor {name} 127.0.0.1 {port} {self.sentinelQuorum}\n")
                f.writelines(f"sentinel {option} {name} {value}\n" for option, value in self.sentinelOptions)
        args = [
            REDIS_SERVER, *config, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder, "--save", "",
            "--appendonly", "yes" if self.appendOnly else "no", "--appendfsync", "always",
            "--logfile", os.path.join(self.folder, "redis.log"), *map(str, self.extra),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == "PONG":
                    return self
            except RedisReplyError as e:
                if str(e).startswith("NOAUTH"):  # up, and wants a password
                    return self
            except OSError:
                pass
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}: see {self.folder}/redis.log")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server on port {self.port} did not answer PING within {START_TIMEOUT} s")
            time.sleep(0.01)

    def command(self, *args: Any) -> Any:
        """
        Send one command on a connection of its own and return the reply.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(_encode(*args))
            return _Reader(sock).reply()

    def kill(self) -> None:
        """
        Kill the server at once (SIGKILL: nothing is written on the way out).
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """
        Stop the server (killed: the tests keep nothing) and remove its folder.
        """
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


_shared: RedisServer | None = None


def sharedServer() -> RedisServer:
    """
    One server for every test that can share it (each FLUSHALLs it first),
    started on first use and stopped when the test process exits.
    """
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        _shared = RedisServer().start()
        atexit.register(_shared.stop)
    return _shared


async def openRedisStore(testCase, server: RedisServer, **kwargs):
    """
    A L{wsqueue.store.redis.RedisStore} on C{server}, open, closed when the test ends
    (as each msgqueue daemon sharing the queue would have its own).
    """
    from wsqueue.store.redis import RedisStore, parseRedisURL

    store = RedisStore(parseRedisURL(server.url), **kwargs)
    testCase.addCleanup(store.close)
    return await store.open()
