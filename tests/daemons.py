"""
Real wsqueue daemons for end-to-end tests: C{twistd -n} subprocesses started through
the reactor (nothing blocks), on free loopback ports, with their own log files in the
test's temporary folder, using the source tree under test (C{PYTHONPATH} is the
repository root).

    msgqueue = await startDaemon(self, "wsqueue-msgqueue")
    publisher = await startDaemon(self, "wsqueue-publisher", "--queue", msgqueue.url)
    await publisher.waitForLinks()          # its readiness events say the link opened
    msgqueue.kill(signal.SIGKILL)
    self.assertEqual(await msgqueue.waitForExit(), -signal.SIGKILL)
    await msgqueue.restart()                # same port

or, for the usual msgqueue + publisher(s) + subscriber(s) with every link open,
C{pipeline = await startDaemonPipeline(self, publishers=1, subscribers=[(), ("--group", "g")])}.
(L{tests.pipeline} is the same in-process, without daemons.)

Every daemon is killed (SIGKILL) and waited for when the test ends.  Every wait has
a deadline and fails with the daemon's output and log tail.  A daemon reports its
readiness on descriptor 3 (C{--ready-file /dev/fd/3}, see L{wsqueue.readiness}):
L{Daemon.start} waits on those events, not on polling its ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import certDir, withTimeout

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
READY_TIMEOUT = 20.0
READY_FD = 3
"""The descriptor on which a daemon started here reports its readiness (C{--ready-file /dev/fd/3})."""


def freePort() -> int:
    """
    A TCP port that was free on 127.0.0.1 a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemonEnvironment() -> dict[str, str]:
    """
    This process's environment with C{PYTHONPATH} set to the repository root, so a
    daemon imports the source tree under test rather than an installed copy.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT
    return env


def exitCodeOf(reason: Failure) -> int:
    """
    The exit status in C{subprocess}'s convention: the exit code, or minus the
    signal number when a signal ended the process.
    """
    value = reason.value
    if isinstance(value, ProcessDone):
        return 0
    if isinstance(value, ProcessTerminated):
        if value.exitCode is not None:
            return value.exitCode
        return -value.signal
    raise ValueError(f"not a process end: {reason!r}")


class _Recorder(ProcessProtocol):
    """
    Collects a process's output and fires C{ended} with its exit status; a daemon's
    readiness events (C{--ready-file /dev/fd/3}, see L{wsqueue.readiness}) arrive on
    descriptor 3 and are kept in C{events}, each waiter told as they come.
    """

    def __init__(self, history: list[dict] | None = None, readyFD: int = READY_FD) -> None:
        self.readyFD = readyFD
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self.events: list[dict] = []
        self.history = [] if history is None else history
        self._eventData = b""
        self._waiters: list[tuple[Callable[[], bool], Deferred]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != self.readyFD:
            super().childDataReceived(childFD, data)
            return
        *lines, self._eventData = (self._eventData + data).split(b"\n")
        for line in lines:
            if line:
                event = json.loads(line)
                self.events.append(event)
                self.history.append(event)
        for waiter in list(self._waiters):
            condition, d = waiter
            if condition():
                self._waiters.remove(waiter)
                d.callback(None)

    def waitForCondition(self, condition: Callable[[], bool]) -> Deferred[None]:
        """
        Fire once C{condition()} holds, checked as each readiness event arrives.
        """
        if condition():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((condition, d))
        return d

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(exitCodeOf(reason))


def runProcess(argv: Sequence[str], path: str | None = None, timeout: float = 30.0) -> Deferred[tuple[int, str]]:
    """
    Run C{argv} (with L{daemonEnvironment}) to the end; fire with its exit status and
    its output (stdout and stderr together).
    """
    recorder = _Recorder()
    process = reactor.spawnProcess(recorder, argv[0], list(argv), env=daemonEnvironment(), path=path)
    call = reactor.callLater(timeout, _killIfRunning, process)

    def ended(code: int) -> tuple[int, str]:
        if call.active():
            call.cancel()
        return code, recorder.output.decode("utf-8", "replace")

    return recorder.ended.addCallback(ended)


class WatchedProcess(ProcessProtocol):
    """
    A process whose standard output and error the test reads while it runs (C{out},
    C{err}), and may write to; C{ended} fires with its exit status.
    """

    def __init__(self, closeStdin: bool = False) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()
        self._closeStdin = closeStdin

    def connectionMade(self) -> None:
        if self._closeStdin:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(exitCodeOf(reason))


def spawnWatched(
    testCase: TestCase, argv: Sequence[str], process: WatchedProcess | None = None, env: dict[str, str] | None = None
) -> WatchedProcess:
    """
    Start C{argv} (with L{daemonEnvironment} unless C{env} is given) under
    C{process}; when the test ends, kill it if it still runs and wait for it.
    """
    watched = WatchedProcess() if process is None else process
    spawned = reactor.spawnProcess(watched, argv[0], list(argv), env=daemonEnvironment() if env is None else env)

    def stop() -> Deferred:
        if not watched.ended.called:
            _killIfRunning(spawned)
        return withTimeout(watched.ended, what=f"{argv[0]} to exit")

    testCase.addCleanup(stop)
    return watched


def _killIfRunning(process) -> None:
    try:
        process.signalProcess("KILL")
    except ProcessExitedAlready:
        pass


class DaemonError(AssertionError):
    """
    A daemon exited or did not get ready in time; the message carries its output.
    """


class Daemon:
    """
    One C{twistd -n <tapname>} subprocess.

    @ivar port: the port it listens on (kept across L{restart}).
    @ivar ports: every port it listens on (the all-in-one daemon has three).
    @ivar logPath: its twistd log file; restarts append to it.
    @ivar exited: fires with the exit status of the current run (see L{exitCodeOf}).
    @ivar listen: its C{--listen} descriptions, given instead of C{--port}; it is
        ready once that many listeners listen.
    @ivar inherit: descriptors it inherits (its descriptor: ours), as from systemd;
        its readiness descriptor moves past them.
    """

    def __init__(
        self, testCase: TestCase, tapname: str, args: Sequence[str] = (), port: int | None = None,
        name: str | None = None, ports: Sequence[int] = (), withPort: bool = True,
        listen: Sequence[str] = (), inherit: Mapping[int, int] | None = None,
    ) -> None:
        self.tapname = tapname
        self.name = name or tapname.removeprefix("wsqueue-") or "wsqueue"
        self.port = freePort() if port is None else port
        self.ports = list(ports) or [self.port]
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.logPath = os.path.join(self.directory, f"{self.name}.log")
        self.listen = list(listen)
        self.inherit = dict(inherit or {})
        self.readyFD = max([READY_FD - 1, *self.inherit]) + 1
        portArgs = ["--port", str(self.port)] if withPort and not listen else []
        listenArgs = [argument for description in listen for argument in ("--listen", description)]
        self.argv = [
            *TWISTD, "-n", "--pidfile=", f"--logfile={self.logPath}", tapname, *portArgs, *listenArgs,
            "--cert-dir", certDir(), "--ready-file", f"/dev/fd/{self.readyFD}", *args,
        ]
        self.process = None
        self.recorder: _Recorder | None = None
        self.history: list[dict] = []
        """Every readiness event of every run, in order (see L{eventMark})."""
        testCase.addCleanup(self.stop)

    @property
    def url(self) -> str:
        """
        The C{wss://} URL of this daemon, as other stages are given it with C{--queue}.
        """
        return f"wss://localhost:{self.port}"

    @property
    def running(self) -> bool:
        return self.recorder is not None and not self.recorder.ended.called

    @property
    def exited(self) -> Deferred[int]:
        assert self.recorder is not None, f"{self.name} was never started"
        return self.recorder.ended

    @property
    def output(self) -> str:
        """
        What the current run wrote to stdout and stderr (twistd logs to L{logPath}).
        """
        return self.recorder.output.decode("utf-8", "replace") if self.recorder else ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- starting and stopping ------------------------------------------------

    def spawn(self) -> None:
        """
        Start the process without waiting for anything.
        """
        assert not self.running, f"{self.name} is already running"
        self.recorder = _Recorder(self.history, self.readyFD)
        self.process = reactor.spawnProcess(
            self.recorder, self.argv[0], self.argv, env=daemonEnvironment(), path=self.directory,
            childFDs={0: "w", 1: "r", 2: "r", self.readyFD: "r", **self.inherit},
        )

    def start(self, timeout: float = READY_TIMEOUT) -> Deferred[Daemon]:
        """
        Start the process; fire with this daemon once every port accepts connections.
        """
        self.spawn()
        return self.waitReady(timeout)

    def restart(self, timeout: float = READY_TIMEOUT) -> Deferred[Daemon]:
        """
        Start again on the same port(s) after the process has exited.
        """
        return self.start(timeout)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """
        Send C{sig} (SIGTERM, SIGKILL...) to the running process.
        """
        assert self.running, f"{self.name} is not running"
        self.process.signalProcess(sig)

    def waitForExit(self, timeout: float = READY_TIMEOUT) -> Deferred[int]:
        """
        Fire with the exit status (minus the signal number if a signal ended it).
        """
        d = Deferred()
        ended = self.exited

        def expire() -> None:
            if not d.called:
                d.errback(self._error(f"did not exit within {timeout} s"))

        call = reactor.callLater(timeout, expire)

        def done(code: int) -> int:
            if call.active():
                call.cancel()
            if not d.called:
                d.callback(code)
            return code

        ended.addCallback(done)
        return d

    def stop(self) -> Deferred:
        """
        Kill the process if it is still running and wait until it has exited.
        """
        if not self.running:
            return succeed(None)
        try:
            self.kill(signal.SIGKILL)
        except ProcessExitedAlready:
            pass
        return self.waitForExit()

    # -- waiting on conditions -------------------------------------------------

    def _error(self, what: str) -> DaemonError:
        status = ""
        if self.recorder is not None and self.recorder.ended.called:
            status = f" (it exited with status {self.recorder.ended.result})"
        return DaemonError(
            f"{self.name} (twistd {self.tapname} on port {self.port}) {what}{status}\n"
            f"--- output ---\n{self.output[-3000:]}\n--- log tail ({self.logPath}) ---\n{self.logTail()}"
        )

    def _poll(self, check, timeout: float, what: str, interval: float = 0.05) -> Deferred:
        """
        Call C{check()} (which may return a Deferred) until it gives a true value;
        fail when the process exits first or at the deadline.
        """
        deadline = reactor.seconds() + timeout

        async def loop():
            while True:
                result = await check()
                if result:
                    return result
                if not self.running:
                    raise self._error(f"exited while waiting for {what}")
                if reactor.seconds() > deadline:
                    raise self._error(f"timed out after {timeout} s waiting for {what}")
                await task.deferLater(reactor, interval, lambda: None)

        return Deferred.fromCoroutine(loop())

    def waitReady(self, timeout: float = READY_TIMEOUT) -> Deferred[Daemon]:
        """
        Fire with this daemon once it says it listens on each of its ports, or with
        C{listen}, on as many listeners (its C{--ready-file} events: no polling, no log
        matching).
        """
        ports = set(self.ports)
        recorder = self.recorder
        assert recorder is not None, f"{self.name} was never started"

        def listening() -> bool:
            events = [event for event in recorder.events if event.get("event") == "listening"]
            if self.listen:
                return len(events) >= len(self.listen)
            return ports <= {event.get("port") for event in events}

        return self._waitFor(listening, timeout, f"port(s) {self.ports} to listen").addCallback(lambda _: self)

    def eventMark(self) -> int:
        """
        The readiness events so far, for L{waitForEvents} to count only what comes after.
        """
        return len(self.history)

    def waitForEvents(
        self, kind: str, since: int = 0, count: int = 1, timeout: float = READY_TIMEOUT
    ) -> Deferred[list[dict]]:
        """
        Fire with the readiness events of C{kind} (C{"listening"}, C{"link-open"},
        C{"link-closed"}, C{"ready"}) after L{eventMark} C{since}, once there are
        C{count} of them (across restarts).
        """

        def matching() -> list[dict]:
            return [event for event in self.history[since:] if event.get("event") == kind]

        what = f"{count} {kind} event(s)"
        return self._waitFor(lambda: len(matching()) >= count, timeout, what).addCallback(lambda _: matching())

    def _waitFor(self, condition: Callable[[], bool], timeout: float, what: str) -> Deferred[None]:
        """
        Fire once C{condition()} holds (checked as readiness events arrive); fail when
        the process exits first or at the deadline, with its output and log tail.
        """
        assert self.recorder is not None, f"{self.name} was never started"
        recorder = self.recorder
        d: Deferred[None] = Deferred()

        def settle(result) -> None:
            if not d.called:
                if call.active():
                    call.cancel()
                d.callback(result) if not isinstance(result, Exception) else d.errback(result)

        call = reactor.callLater(timeout, lambda: settle(self._error(f"timed out after {timeout} s waiting for {what}")))
        recorder.waitForCondition(condition).addCallback(settle)
        def exited(code: int) -> int:
            settle(self._error(f"exited while waiting for {what}"))
            return code  # for the others waiting on the exit

        recorder.ended.addCallback(exited)
        return d

    def logText(self, since: int = 0) -> str:
        """
        The log file from byte offset C{since} (see L{logMark}).
        """
        try:
            with open(self.logPath, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def logMark(self) -> int:
        """
        The current end of the log, for L{waitForLog} to look only at what comes after.
        """
        try:
            return os.path.getsize(self.logPath)
        except FileNotFoundError:
            return 0

    def logTail(self, lines: int = 30) -> str:
        return "\n".join(self.logText().splitlines()[-lines:])

    def waitForLog(
        self, text: str | re.Pattern, since: int = 0, count: int = 1, timeout: float = READY_TIMEOUT
    ) -> Deferred[list[str]]:
        """
        Fire once C{text} (a string, or a compiled regular expression) occurs C{count}
        times in the log after byte offset C{since} (see L{logMark}); fire with the
        matches.
        """
        pattern = text if isinstance(text, re.Pattern) else re.compile(re.escape(text))

        async def found():
            matches = pattern.findall(self.logText(since))
            return matches if len(matches) >= count else None

        return self._poll(found, timeout, f"{count} x {pattern.pattern!r} in the log")

    def waitForLinks(self, since: int = 0, count: int = 1, timeout: float = READY_TIMEOUT) -> Deferred[list[str]]:
        """
        Fire with the links' URLs once C{count} links to msgqueue have opened after
        L{eventMark} C{since} (their C{link-open} readiness events).
        """
        return self.waitForEvents("link-open", since, count, timeout).addCallback(
            lambda events: [event["url"] for event in events]
        )


def startDaemon(testCase: TestCase, tapname: str, *args: str, **kwargs) -> Deferred[Daemon]:
    """
    Start C{twistd -n tapname --port P --cert-dir <test certificates> args...} on a
    free port and fire with the L{Daemon} once it accepts connections.
    """
    return Daemon(testCase, tapname, args, **kwargs).start()


def startDaemons(testCase: TestCase, *specs: tuple) -> Deferred[list[Daemon]]:
    """
    Start several daemons at once (each spec is C{(tapname, *args)}); fire with them
    in order once all are ready, or fail with the first problem.
    """
    daemons = [Daemon(testCase, spec[0], spec[1:]) for spec in specs]
    return _all([daemon.start() for daemon in daemons]).addCallback(lambda _: daemons)


def _all(waiting: list[Deferred]) -> Deferred[list]:
    """
    Fire with every result once all have fired, or fail with the first failure.
    """
    d = DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True)
    return d.addCallbacks(lambda results: [value for _, value in results], lambda failure: failure.value.subFailure)


@dataclass
class DaemonPipeline:
    """
    A msgqueue daemon with publisher and subscriber daemons joined to it.
    """

    msgqueue: Daemon
    publishers: list[Daemon]
    subscribers: list[Daemon]

    @property
    def publisher(self) -> Daemon:
        return self.publishers[0]

    @property
    def subscriber(self) -> Daemon:
        return self.subscribers[0]


def startDaemonPipeline(
    testCase: TestCase, publishers: int = 1, subscribers: Sequence[Sequence[str]] = ((),), msgqueueArgs: Sequence[str] = (),
    publisherArgs: Sequence[str] = (),
) -> Deferred[DaemonPipeline]:
    """
    Start msgqueue, then C{publishers} publisher daemons and one subscriber daemon per
    entry of C{subscribers} (its extra arguments, e.g. C{("--group", "g")}) at once;
    fire once every daemon listens and every link to msgqueue is open.
    C{publisherArgs} are given to every publisher.
    """

    async def start() -> DaemonPipeline:
        msgqueue = await startDaemon(testCase, "wsqueue-msgqueue", *msgqueueArgs)
        queue = ("--queue", msgqueue.url)
        specs = [("wsqueue-publisher", *queue, *publisherArgs)] * publishers + [
            ("wsqueue-subscriber", *queue, *args) for args in subscribers
        ]
        stages = await startDaemons(testCase, *specs)
        await _all([stage.waitForLinks() for stage in stages])
        return DaemonPipeline(msgqueue, stages[:publishers], stages[publishers:])

    return Deferred.fromCoroutine(start())
