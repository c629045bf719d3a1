"""
wsqueue-client against real loopback TLS servers: the three stages running in this
process (L{startPipeline}), a publisher without msgqueue, and servers that refuse.

The command runs in this process through L{execute} (what C{main} runs inside
C{task.react}), and as C{python -m wsqueue.client} spawned through the reactor,
which is the only way to see what the process does when it ends.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from wsqueue import tls
from wsqueue.auth import makeAuthenticator
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.client import (
    INTERACTIVE_USAGE,
    Session,
    _Interactive,
    endpointURL,
    execute,
    formatFrame,
    parser,
)
from wsqueue.publisher import Forwarder, makePublisherFactory
from wsqueue.server import EndpointHandler, Limits, StageServerFactory, StageServerProtocol

from .daemons import WatchedProcess, daemonEnvironment, spawnWatched
from .helpers import caPath, certDir, listenTLS, waitFor, withTimeout
from .pipeline import startPipeline

UNAUTHORIZED = "wsqueue-client: wrong user or password (set --user/--password or WSQUEUE_USER/WSQUEUE_PASSWORD)\n"
UNTRUSTED = "wsqueue-client: certificate not trusted: pass --ca FILE or --cert-dir DIR (or --insecure for testing)\n"


def recordServerCloses(testCase: TestCase) -> list[tuple[str, bool, int | None]]:
    """
    Record C{(path, wasClean, code)} for every server connection of this process
    that closes during the test.  A client that ends without a closing handshake
    shows as C{(path, False, 1006)}.
    """
    closes: list[tuple[str, bool, int | None]] = []
    original = StageServerProtocol.onClose

    def onClose(self: StageServerProtocol, wasClean: bool, code: int | None, reason: str | None) -> None:
        closes.append((self.path, wasClean, code))
        original(self, wasClean, code, reason)

    testCase.patch(StageServerProtocol, "onClose", onClose)
    return closes


def clientClosesOn(closes: list, path: str) -> list[tuple[str, bool, int | None]]:
    return [close for close in closes if close[0] == path]


async def assertClosedCleanly(testCase: TestCase, run: Run, closes: list, *paths: str) -> None:
    """
    Check that C{run}'s connections had closed with a closing handshake when it
    ended, and that the servers (eventually) saw code 1000 on C{paths}.
    """
    testCase.assertEqual(len(run.session.connections), len(paths))
    for connection in run.session.connections:
        testCase.assertTrue(connection.closed.called)
        testCase.assertIs(connection.wasClean, True)
    await waitFor(lambda: all(clientClosesOn(closes, path) for path in paths), what=f"the servers to see {paths} closed")
    for path in paths:
        testCase.assertEqual(clientClosesOn(closes, path), [(path, True, 1000)])


def listenPublisherWithoutQueue(testCase: TestCase) -> int:
    """
    A real publisher whose msgqueue never answers: it takes messages and holds them.
    """
    factory = makePublisherFactory(Forwarder(reactor), makeAuthenticator(None, reactor), Limits(), reactor)
    return listenTLS(testCase, factory)


async def listenWithCertificates(testCase: TestCase, directory: str) -> int:
    """
    A publisher on loopback TLS with the certificate in C{directory}.
    """
    factory = makePublisherFactory(Forwarder(reactor), makeAuthenticator(None, reactor), Limits(), reactor)
    port = await tls.serverEndpoint(reactor, 0, "127.0.0.1", directory).listen(factory)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


class _ClosingPublisher(EndpointHandler):
    """
    A /publish that closes the connection instead of answering a message.
    """

    def received(self, payload: bytes, isBinary: bool) -> None:
        self.connection.sendClose(1000)


class _Silent(Protocol):
    """
    Takes a TCP connection and never says anything (no TLS, no HTTP).
    """

    def __init__(self, lost: list[Deferred]) -> None:
        self.lost: Deferred[None] = Deferred()
        lost.append(self.lost)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


async def listenSilent(testCase: TestCase) -> tuple[int, list[Deferred]]:
    """
    A loopback port whose connections never answer; the list fills with one
    Deferred per connection, fired when it is gone.
    """
    lost: list[Deferred] = []
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(lambda: _Silent(lost)))
    testCase.addCleanup(port.stopListening)
    return port.getHost().port, lost


async def closedPort() -> int:
    """
    A loopback port nothing listens on any more.
    """
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    number = port.getHost().port
    await port.stopListening()
    return number


class Run:
    """
    One run of the command in this process, with the demo account and (unless
    C{ca} is L{None}) the test CA.  C{session} is its L{Session}: closing it is what
    Ctrl-C does to the command.
    """

    def __init__(self, argv: tuple[str, ...], ca: str | None = None) -> None:
        trust = [] if ca is None else ["--ca", ca]
        self.argv = argv
        self.args = parser().parse_args(["--user", "hello", "--password", "test", *trust, *argv])
        self.session = Session(reactor, self.args)
        self.out, self.err = io.StringIO(), io.StringIO()
        self.result = execute(reactor, self.args, self.out, self.err, self.session)

    async def finish(self) -> tuple[int, str, str]:
        """
        The exit status, output and errors, once the command has ended.
        """
        code = await withTimeout(self.result, 20, f"wsqueue-client {' '.join(self.argv)}")
        return code, self.out.getvalue(), self.err.getvalue()


class InProcess(TestCase):
    timeout = 30

    def runClient(self, *argv: str, ca: str | None = "") -> Deferred[tuple[int, str, str]]:
        """
        Run C{wsqueue-client argv} (trusting the test CA unless C{ca} says otherwise)
        to its end.
        """
        return Deferred.fromCoroutine(Run(argv, caPath() if ca == "" else ca).finish())


class ClientProcess(WatchedProcess):
    """
    C{python -m wsqueue.client} as a person runs it: output collected, input written
    by the test, C{ended} firing with the exit status.
    """

    def finish(self, timeout: float = 20.0) -> Deferred[int]:
        return withTimeout(self.ended, timeout, f"wsqueue-client to exit; stderr so far: {self.err!r}")


def spawnClient(testCase: TestCase, *argv: str) -> ClientProcess:
    """
    Start the command with the test certificates (C{WS_CERT_DIR}) and the demo
    account; killed at the end of the test if still running.
    """
    env = daemonEnvironment()
    env["WS_CERT_DIR"] = certDir()
    for name in ("WSQUEUE_USER", "WSQUEUE_PASSWORD"):
        env.pop(name, None)
    process = ClientProcess()
    spawnWatched(testCase, [sys.executable, "-m", "wsqueue.client", *argv], process, env)
    return process


class FormatTests(TestCase):
    def test_message(self) -> None:
        """
        Messages print as the Go demo client printed them.
        """
        self.assertEqual(formatFrame(b'{"Topic": "t", "Content": "hi", "Offset": 3}'), ("<[t] hi", False))

    def test_error(self) -> None:
        """
        Errors are marked as errors.
        """
        self.assertEqual(formatFrame(b'{"Error": "bad"}'), ("error: bad", True))

    def test_other(self) -> None:
        """
        Acks and anything unknown print readably.
        """
        self.assertEqual(formatFrame(b'{"Ack": 1}'), ("acknowledged 1", False))
        self.assertEqual(formatFrame(b"plain"), ("plain", False))
        self.assertEqual(formatFrame(b"[1]"), ("[1]", False))


class PublishAndSubscribeTests(InProcess):
    async def test_publishAndSubscribe(self) -> None:
        """
        "sub" prints what "pub" publishes, as <[topic] content, and on standard
        error where to resume after it; stopping it (what Ctrl-C does) exits 0
        without a word.
        """
        pipeline = await startPipeline(self)
        subscribing = Run(("--subscriber", f"wss://localhost:{pipeline.subscriberPort}", "sub", "news"), caPath())
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        published = await self.runClient("--publisher", f"wss://localhost:{pipeline.publisherPort}", "pub", "news", "hello", "world")
        self.assertEqual(published, (0, "published\n", ""))
        await waitFor(lambda: subscribing.out.getvalue(), what="the message")
        subscribing.session.close()
        status, out, err = await subscribing.finish()
        self.assertEqual((status, out), (0, "<[news] hello world\n"))
        self.assertRegex(err, r"^\(--since 1:[0-9a-f]{32}\)\n$")

    async def test_since(self) -> None:
        """
        "sub --since OFFSET:EPOCH" (what "sub" printed) first prints what was missed
        after that message, then live ones; with a position msgqueue cannot
        replay from, it says so.
        """
        pipeline = await startPipeline(self)
        publisher = ("--publisher", f"wss://localhost:{pipeline.publisherPort}")
        subscriber = ("--subscriber", f"wss://localhost:{pipeline.subscriberPort}")
        first = Run((*subscriber, "sub", "news"), caPath())
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        self.assertEqual((await self.runClient(*publisher, "pub", "news", "one"))[0], 0)
        await waitFor(lambda: first.err.getvalue(), what="the resume point")
        first.session.close()
        _, _, err = await first.finish()
        since = err.strip()[len("(--since "):-1]
        for content in ("two", "three"):
            self.assertEqual((await self.runClient(*publisher, "pub", "news", content))[0], 0)
        again = Run((*subscriber, "sub", "--since", since, "news"), caPath())
        await waitFor(lambda: again.out.getvalue().count("\n") == 2, what="the missed messages")
        again.session.close()
        status, out, err = await again.finish()
        self.assertEqual((status, out), (0, "<[news] two\n<[news] three\n"))
        self.assertIn("news: recovered: what was missed follows, then live messages\n", err)
        lost = Run((*subscriber, "sub", "--since", "1:another-epoch", "news"), caPath())
        await waitFor(lambda: "NOT recovered" in lost.err.getvalue(), what="the refusal to recover")
        lost.session.close()
        self.assertRegex((await lost.finish())[2], r"news: NOT recovered \(msgqueue is at 3:[0-9a-f]{32}\)")

    def test_sinceSyntax(self) -> None:
        self.assertEqual(parser().parse_args(["sub", "--since", "17:abc", "t"]).since, (17, "abc"))
        with self.assertRaises(SystemExit):
            parser().parse_args(["sub", "--since", "abc", "t"])

    async def test_subscriptionEndedByServer(self) -> None:
        """
        "sub" exits 1 and says so when the server closes the connection.
        """
        pipeline = await startPipeline(self)
        subscribing = self.runClient("--subscriber", f"wss://localhost:{pipeline.subscriberPort}", "sub", "news")
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        for handler in list(pipeline.reader.registry.subscribers("news")):
            handler.connection.sendClose(1000)
        code, out, err = await subscribing
        self.assertEqual((code, out), (1, ""))
        self.assertIn("connection closed (code 1000)", err)

    async def test_closedBeforeAcknowledging(self) -> None:
        """
        "pub" exits 1, and says so, when the publisher closes instead of answering.
        """
        factory = StageServerFactory({"/publish": _ClosingPublisher}, makeAuthenticator(None, reactor), Limits(), reactor)
        port = listenTLS(self, factory)
        result = await self.runClient("--publisher", f"wss://localhost:{port}", "pub", "news", "hi")
        closedEarly = "the publisher closed the connection before acknowledging (code 1000)"
        self.assertEqual(result, (1, "", f"wsqueue-client: {closedEarly}\n"))

    async def test_publishRefused(self) -> None:
        """
        "pub" exits 1 when the publisher answers with an Error.
        """
        pipeline = await startPipeline(self)
        code, out, err = await self.runClient("--publisher", f"wss://localhost:{pipeline.publisherPort}", "pub", "bad topic", "x")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("error: Topic must not contain whitespace", err)


class ClosingHandshakeTests(InProcess):
    """
    Item 10 of issue 8: every way out of the command closes with code 1000 and
    waits for the server's answer; the servers logged 1006 for each "pub" and "exit".
    """

    async def test_pub(self) -> None:
        """
        When "pub" has finished, its connection has closed with a closing handshake,
        and the publisher saw 1000.
        """
        pipeline = await startPipeline(self)
        closes = recordServerCloses(self)
        run = Run(("--publisher", f"wss://localhost:{pipeline.publisherPort}", "pub", "news", "hi"), caPath())
        self.assertEqual(await run.finish(), (0, "published\n", ""))
        await assertClosedCleanly(self, run, closes, "/publish")

    async def test_pubRefused(self) -> None:
        """
        A refused message ends with a clean close too.
        """
        pipeline = await startPipeline(self)
        closes = recordServerCloses(self)
        run = Run(("--publisher", f"wss://localhost:{pipeline.publisherPort}", "pub", "bad topic", "x"), caPath())
        self.assertEqual((await run.finish())[0], 1)
        await assertClosedCleanly(self, run, closes, "/publish")

    async def test_pubCommand(self) -> None:
        """
        The command as a process: it used to stop the reactor before the closing
        handshake, so the publisher saw the connection dropped.
        """
        pipeline = await startPipeline(self)
        closes = recordServerCloses(self)
        process = spawnClient(self, "--publisher", f"wss://localhost:{pipeline.publisherPort}", "pub", "news", "hi")
        self.assertEqual(await process.finish(), 0, process.err)
        self.assertEqual((process.out, process.err), (b"published\n", b""))
        await waitFor(lambda: clientClosesOn(closes, "/publish"), what="the publisher to see the close")
        self.assertEqual(clientClosesOn(closes, "/publish"), [("/publish", True, 1000)])

    async def test_subInterrupted(self) -> None:
        """
        Ctrl-C (SIGINT) stops "sub" with a clean close, exit status 0 and nothing on
        standard error.
        """
        pipeline = await startPipeline(self)
        closes = recordServerCloses(self)
        process = spawnClient(self, "--subscriber", f"wss://localhost:{pipeline.subscriberPort}", "sub", "news")
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        process.transport.signalProcess("INT")
        self.assertEqual(await process.finish(), 0, process.err)
        self.assertEqual(process.err, b"")
        await waitFor(lambda: clientClosesOn(closes, "/subscribe"), what="the subscriber to see the close")
        self.assertEqual(clientClosesOn(closes, "/subscribe"), [("/subscribe", True, 1000)])

    async def interactive(self, end: str) -> None:
        pipeline = await startPipeline(self)
        closes = recordServerCloses(self)
        process = spawnClient(
            self, "--publisher", f"wss://localhost:{pipeline.publisherPort}",
            "--subscriber", f"wss://localhost:{pipeline.subscriberPort}",
        )
        process.transport.write(b"sub news\n")
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        if end == "exit":
            process.transport.write(b"exit\n")
        elif end == "INT":
            process.transport.signalProcess("INT")
        else:
            process.transport.closeStdin()
        self.assertEqual(await process.finish(), 0, process.err)
        self.assertEqual(process.err, b"")
        await waitFor(lambda: len(clientClosesOn(closes, "/publish") + clientClosesOn(closes, "/subscribe")) == 2,
                      what="both servers to see the close")
        self.assertEqual(clientClosesOn(closes, "/publish"), [("/publish", True, 1000)])
        self.assertEqual(clientClosesOn(closes, "/subscribe"), [("/subscribe", True, 1000)])

    async def test_interactiveExit(self) -> None:
        """
        "exit" closes both connections cleanly.
        """
        await self.interactive("exit")

    async def test_interactiveEndOfInput(self) -> None:
        """
        The end of standard input (Ctrl-D) closes both connections cleanly.
        """
        await self.interactive("end of input")

    async def test_interactiveInterrupted(self) -> None:
        """
        Ctrl-C closes both connections cleanly, and is not reported as a failure.
        """
        await self.interactive("INT")


class TimeoutTests(InProcess):
    """
    Item 10 of issue 8: "pub" waited forever for a publisher whose msgqueue was away.
    """

    def test_default(self) -> None:
        """
        --timeout is 10 s unless given; it must be a positive number.
        """
        self.assertEqual(parser().parse_args(["pub", "t", "m"]).timeout, 10.0)
        self.assertEqual(parser().parse_args(["--timeout", "0.5", "pub", "t", "m"]).timeout, 0.5)
        self.patch(sys, "stderr", io.StringIO())
        for bad in ("0", "-1", "soon", "inf", "nan"):
            self.assertRaises(SystemExit, parser().parse_args, ["--timeout", bad, "pub", "t", "m"])
        self.assertIn("is not a positive number of seconds", sys.stderr.getvalue())

    async def test_noAcknowledgement(self) -> None:
        """
        A message the publisher holds without acknowledging it: exit 1 after
        --timeout with one plain line, and still a clean close.
        """
        port = listenPublisherWithoutQueue(self)
        closes = recordServerCloses(self)
        run = Run(("--publisher", f"wss://localhost:{port}", "--timeout", "0.5", "pub", "news", "hi"), caPath())
        result = await run.finish()
        self.assertEqual(result, (1, "", "wsqueue-client: no acknowledgement within 0.5 s (is msgqueue running?)\n"))
        await assertClosedCleanly(self, run, closes, "/publish")

    async def test_noAcknowledgementCommand(self) -> None:
        """
        The same, as a process.
        """
        port = listenPublisherWithoutQueue(self)
        process = spawnClient(self, "--publisher", f"wss://localhost:{port}", "--timeout", "0.5", "pub", "news", "hi")
        self.assertEqual(await process.finish(), 1)
        self.assertEqual((process.out, process.err),
                         (b"", b"wsqueue-client: no acknowledgement within 0.5 s (is msgqueue running?)\n"))

    async def test_interrupted(self) -> None:
        """
        Ctrl-C while "pub" waits for the acknowledgement: exit 1, saying that the
        message may or may not be published, and a clean close.
        """
        forwarder = Forwarder(reactor)
        port = listenTLS(self, makePublisherFactory(forwarder, makeAuthenticator(None, reactor), Limits(), reactor))
        closes = recordServerCloses(self)
        process = spawnClient(self, "--publisher", f"wss://localhost:{port}", "pub", "news", "hi")
        await waitFor(lambda: forwarder.held, what="the publisher to take the message")
        process.transport.signalProcess("INT")
        self.assertEqual(await process.finish(), 1)
        stopped = b"stopped before an acknowledgement came: the message may or may not be published"
        self.assertEqual((process.out, process.err), (b"", b"wsqueue-client: " + stopped + b"\n"))
        await waitFor(lambda: closes, what="the publisher to see the close")
        self.assertEqual(closes, [("/publish", True, 1000)])

    async def test_connecting(self) -> None:
        """
        A server that takes the TCP connection and never answers: the attempt is
        given up after --timeout, and the connection closed.
        """
        port, lost = await listenSilent(self)
        result = await self.runClient("--publisher", f"wss://localhost:{port}", "--timeout", "0.5", "pub", "news", "hi")
        self.assertEqual(result, (1, "", f"wsqueue-client: cannot connect to localhost:{port}: no answer within 0.5 s\n"))
        self.assertEqual(len(lost), 1)
        await withTimeout(lost[0], what="the abandoned connection to close")


class URLTests(InProcess):
    """
    Item 10 of issue 8: "--publisher wss://host:8081/publish" got a 404, because the
    client added "/publish" itself.
    """

    def test_forms(self) -> None:
        """
        The server's address and the endpoint's, with or without a trailing slash,
        give the endpoint; another path is kept as a prefix.
        """
        for given in ("wss://h:8081", "wss://h:8081/", "wss://h:8081/publish", "wss://h:8081/publish/"):
            self.assertEqual(endpointURL(given, "/publish"), "wss://h:8081/publish", given)
        self.assertEqual(endpointURL("wss://h/queue/", "/subscribe"), "wss://h/queue/subscribe")
        self.assertEqual(endpointURL("wss://h/queue/subscribe", "/subscribe"), "wss://h/queue/subscribe")

    async def test_endpointURLs(self) -> None:
        """
        "pub" and "sub" work with the endpoints' URLs.
        """
        pipeline = await startPipeline(self)
        subscribing = Run(("--subscriber", f"wss://localhost:{pipeline.subscriberPort}/subscribe/", "sub", "news"), caPath())
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        for path in ("/publish", "/publish/"):
            result = await self.runClient("--publisher", f"wss://localhost:{pipeline.publisherPort}{path}", "pub", "news", path)
            self.assertEqual(result, (0, "published\n", ""), path)
        await waitFor(lambda: subscribing.out.getvalue().count("\n") == 2, what="both messages")
        subscribing.session.close()
        self.assertEqual((await subscribing.finish())[:2], (0, "<[news] /publish\n<[news] /publish/\n"))


    async def test_endpointURLCommand(self) -> None:
        """
        The command as a process, given the publisher's endpoint URL.
        """
        pipeline = await startPipeline(self)
        process = spawnClient(self, "--publisher", f"wss://localhost:{pipeline.publisherPort}/publish", "pub", "news", "hi")
        self.assertEqual(await process.finish(), 0, process.err)
        self.assertEqual((process.out, process.err), (b"published\n", b""))


class RefusalTests(InProcess):
    """
    Item 10 of issue 8: a refused connection said "Connection was aborted locally
    using ITCPTransport.abortConnection"; now one line says what to change.
    """

    async def test_wrongPassword(self) -> None:
        """
        A 401 names the options and variables that set the credentials.
        """
        pipeline = await startPipeline(self)
        result = await self.runClient("--publisher", f"wss://localhost:{pipeline.publisherPort}", "--password", "x", "pub", "t", "m")
        self.assertEqual(result, (1, "", UNAUTHORIZED))

    async def test_untrusted(self) -> None:
        """
        A certificate from a CA the client was not given: say how to give it.
        """
        pipeline = await startPipeline(self)
        other = self.mktemp()
        makeDevelopmentCertificates(other)
        argv = ("--publisher", f"wss://localhost:{pipeline.publisherPort}", "pub", "t", "m")
        self.assertEqual(await self.runClient(*argv, ca=os.path.join(other, "ca.crt")), (1, "", UNTRUSTED))
        self.assertEqual(await self.runClient("--cert-dir", other, *argv, ca=None), (1, "", UNTRUSTED))

    async def test_wrongHost(self) -> None:
        """
        A trusted certificate for another host name is not "not trusted".
        """
        elsewhere = self.mktemp()
        makeDevelopmentCertificates(elsewhere, ("example.invalid",))
        port = await listenWithCertificates(self, elsewhere)
        result = await self.runClient("--publisher", f"wss://localhost:{port}", "pub", "t", "m", ca=os.path.join(elsewhere, "ca.crt"))
        wrongHost = "certificate not valid for localhost: connect with a name it lists, or --insecure for testing"
        self.assertEqual(result, (1, "", f"wsqueue-client: {wrongHost}\n"))

    async def test_refused(self) -> None:
        """
        Nothing listening: "connection refused", naming host and port.
        """
        port = await closedPort()
        result = await self.runClient("--publisher", f"wss://localhost:{port}", "pub", "t", "m")
        self.assertEqual(result, (1, "", f"wsqueue-client: cannot connect to localhost:{port}: connection refused\n"))

    async def test_noSuchEndpoint(self) -> None:
        """
        The subscriber's address given as the publisher's: a 404 naming the path and
        the option to check.
        """
        pipeline = await startPipeline(self)
        code, out, err = await self.runClient("--publisher", f"wss://localhost:{pipeline.subscriberPort}", "pub", "t", "m")
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith(f"wsqueue-client: localhost:{pipeline.subscriberPort} has no endpoint /publish (HTTP 404"), err)
        self.assertTrue(err.endswith("check --publisher\n"), err)
        self.assertEqual(err.count("\n"), 1, err)

    async def test_badURLs(self) -> None:
        """
        A URL that is not wss:// and a missing CA file are one line each.
        """
        result = await self.runClient("--publisher", "ws://localhost:8081", "pub", "t", "m")
        self.assertEqual(result, (1, "", "wsqueue-client: 'ws://localhost:8081/publish' is not a wss:// URL\n"))
        code, out, err = await self.runClient("--publisher", "wss://localhost:8081", "pub", "t", "m", ca="/nonexistent/ca.crt")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("CA certificate /nonexistent/ca.crt does not exist", err)
        self.assertEqual(err.count("\n"), 1, err)

    async def test_commandLine(self) -> None:
        """
        As a process: exit 1, the one line, no traceback.
        """
        pipeline = await startPipeline(self)
        other = self.mktemp()
        makeDevelopmentCertificates(other)
        publisher = ("--publisher", f"wss://localhost:{pipeline.publisherPort}")
        for argv, expected in (
            (("--password", "x"), UNAUTHORIZED),
            (("--cert-dir", other), UNTRUSTED),
        ):
            process = spawnClient(self, *publisher, *argv, "pub", "t", "m")
            self.assertEqual(await process.finish(), 1)
            self.assertEqual((process.out, process.err.decode()), (b"", expected))


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendMessage(self, payload: bytes) -> None:
        self.sent.append(payload)


class InteractiveTests(TestCase):
    """
    Item 10 of issue 8: interactive publishing printed nothing, and a line without a
    space was published as an empty message.
    """

    def setUp(self) -> None:
        self.publisher, self.subscriber = FakeConnection(), FakeConnection()
        self.err = io.StringIO()
        self.clock = Clock()
        self.terminal = _Interactive(self.publisher, self.subscriber, self.err, self.clock, 10.0)
        self.transport = StringTransport()
        self.terminal.makeConnection(self.transport)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def type(self, *lines: bytes) -> None:
        for line in lines:
            self.terminal.dataReceived(line + b"\n")

    def published(self) -> list[dict]:
        return [json.loads(payload) for payload in self.publisher.sent]

    def test_commands(self) -> None:
        """
        "sub t" and "unsub t" go to the subscriber, "t text" is published with an Id.
        """
        self.type(b"sub news", b"news hello there", b"", b"unsub news", b"news again")
        self.assertEqual(self.subscriber.sent, [b"sub news", b"unsub news"])
        self.assertEqual(self.published(), [{"Topic": "news", "Content": "hello there", "Id": 1},
                                            {"Topic": "news", "Content": "again", "Id": 2}])
        self.terminal.stop(0)

    def test_acknowledged(self) -> None:
        """
        The Ack of a published message prints "published"; its Error prints the error.
        """
        self.type(b"news one", b"news two")
        self.terminal.publisherFrame(b'{"Ack":1}')
        self.terminal.publisherFrame(b'{"Error":"msgqueue is full","Id":2}')
        self.assertEqual(self.transport.value(), b"published\n")
        self.assertEqual(self.err.getvalue(), "error: msgqueue is full\n")

    def test_usage(self) -> None:
        """
        A line without a topic and a message (or a bare "sub") gets the syntax, and
        nothing is sent.
        """
        self.type(b"news", b"news   ", b"sub", b"unsub")
        self.assertEqual((self.publisher.sent, self.subscriber.sent), ([], []))
        self.assertEqual(self.err.getvalue(), f"{INTERACTIVE_USAGE}\n" * 4)

    def test_noAcknowledgement(self) -> None:
        """
        A message without an answer within the timeout is reported; a late Ack is
        still shown.
        """
        self.type(b"news hi")
        self.clock.advance(9.9)
        self.assertEqual(self.err.getvalue(), "")
        self.clock.advance(0.1)
        self.assertEqual(self.err.getvalue(), "no acknowledgement within 10 s (is msgqueue running?)\n")
        self.terminal.publisherFrame(b'{"Ack":1}')
        self.assertEqual(self.transport.value(), b"acknowledged 1\n")

    def test_exitWaitsForAnswers(self) -> None:
        """
        "exit" (or the end of input) ends the session once every message published
        has its answer, and reads no more commands.
        """
        self.type(b"news hi", b"exit", b"news later")
        self.assertNoResult(self.terminal.done)
        self.assertEqual(len(self.publisher.sent), 1)
        self.terminal.publisherFrame(b'{"Ack":1}')
        self.assertEqual(self.successResultOf(self.terminal.done), 0)
        self.assertEqual(self.transport.value(), b"published\n")

    def test_endOfInputWithoutAnswer(self) -> None:
        """
        At the end of input, a message that gets no answer ends the session after the
        timeout.
        """
        self.type(b"news hi")
        self.terminal.readConnectionLost()
        self.assertNoResult(self.terminal.done)
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(self.terminal.done), 0)
        self.assertIn("no acknowledgement", self.err.getvalue())

    def test_messagesAndErrors(self) -> None:
        """
        The subscriber's messages go to standard output, its errors to standard error.
        """
        self.terminal.subscriberFrame(b'{"Topic":"news","Content":"hi","Offset":1,"Epoch":"e"}')
        self.terminal.subscriberFrame(b'{"Error":"unknown command"}')
        self.assertEqual(self.transport.value(), b"<[news] hi\n")
        self.assertEqual(self.err.getvalue(), "error: unknown command\n")


class InteractiveCommandTests(TestCase):
    timeout = 30

    async def subscribedSession(self):
        """
        The three stages, and the interactive command against them, subscribed to news.
        """
        pipeline = await startPipeline(self)
        process = spawnClient(
            self, "--publisher", f"wss://localhost:{pipeline.publisherPort}",
            "--subscriber", f"wss://localhost:{pipeline.subscriberPort}",
        )
        process.transport.write(b"sub news\n")
        await waitFor(lambda: pipeline.reader.registry.subscribers("news"), what="the subscription")
        return pipeline, process

    async def test_session(self) -> None:
        """
        The interactive command against the three stages: a message typed is
        "published" and arrives; a bare word gets the syntax; input piped in without
        "exit" still gets its answers before the command ends.
        """
        _, process = await self.subscribedSession()
        process.transport.write(b"news hello there\nnews\n")
        await waitFor(lambda: b"<[news] hello there\n" in process.out, what="the message")
        await waitFor(lambda: INTERACTIVE_USAGE.encode() in process.err, what="the syntax")
        process.transport.write(b"news last one\n")
        process.transport.closeStdin()
        self.assertEqual(await process.finish(), 0, process.err)
        self.assertEqual(process.out.count(b"published\n"), 2, process.out)
        self.assertEqual(process.err, INTERACTIVE_USAGE.encode() + b"\n")

    async def test_serverCloses(self) -> None:
        """
        A server closing its connection ends the session with exit status 1 and
        says which server it was.
        """
        pipeline, process = await self.subscribedSession()
        for handler in list(pipeline.reader.registry.subscribers("news")):
            handler.connection.sendClose(1000)
        self.assertEqual(await process.finish(), 1)
        self.assertEqual(process.err, b"the subscriber closed the connection (code 1000)\n")


class HelpTests(TestCase):
    """
    Item 13 of issue 8: --help showed the module docstring's markup.
    """

    markup = re.compile(r"[A-Z]\{|@ivar|@param")

    def helpOf(self, *command: str) -> str:
        """
        What C{wsqueue-client [command] --help} prints.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, parser().parse_args, [*command, "--help"])
        return out.getvalue()

    def test_plainText(self) -> None:
        """
        The help of the command and of its subcommands is plain text.
        """
        for command in ((), ("pub",), ("sub",)):
            text = self.helpOf(*command)
            self.assertTrue(text.startswith(f"usage: wsqueue-client {' '.join(command)}".rstrip()), text)
            self.assertIsNone(self.markup.search(text), text)

    def test_defaults(self) -> None:
        """
        Every option's help says its default.
        """
        text = self.helpOf()
        options = re.split(r"\n(?=  -)", text.split("options:\n", 1)[1].split("\n\n", 1)[0])
        self.assertGreaterEqual(len(options), 9)
        for option in options:
            if not option.lstrip().startswith("-h, --help"):
                self.assertIn("(default: ", " ".join(option.split()), option)

    async def test_command(self) -> None:
        """
        "wsqueue-client --help" as a process.
        """
        process = spawnClient(self, "--help")
        self.assertEqual(await process.finish(), 0)
        self.assertTrue(process.out.startswith(b"usage: wsqueue-client"), process.out)
        self.assertIn(b"--timeout SECONDS", process.out)
        self.assertIsNone(self.markup.search(process.out.decode()), process.out)
