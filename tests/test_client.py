"""
wsqueue-client against the three stages running in this process, and as a command.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from wsqueue.client import _Interactive, formatFrame, parser, publishOne, subscribe

from .helpers import Clients, caPath, certDir, nextJSON, waitFor, withTimeout
from .pipeline import startPipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendMessage(self, payload: bytes) -> None:
        self.sent.append(payload)


class InteractiveTests(TestCase):
    def test_commands(self) -> None:
        """
        "sub t" and "unsub t" go to the subscriber, "t text" is published, "exit" quits.
        """
        publisher, subscriber = FakeConnection(), FakeConnection()
        done = Deferred()
        protocol = _Interactive(publisher, subscriber, done)
        lost = []
        protocol.transport = type("T", (), {"loseConnection": lambda self: lost.append(True)})()
        for line in (b"sub news", b"news hello there", b"", b"unsub news", b"exit"):
            protocol.lineReceived(line)
        self.assertEqual(subscriber.sent, [b"sub news", b"unsub news"])
        self.assertEqual([json.loads(p) for p in publisher.sent], [{"Topic": "news", "Content": "hello there"}])
        self.assertEqual(lost, [True])
        protocol.connectionLost(None)
        self.assertEqual(self.successResultOf(done), 0)


class ClientTests(TestCase):
    timeout = 30

    async def arguments(self, *argv: str) -> argparse.Namespace:
        self.pipeline = await startPipeline(self)
        return parser().parse_args(
            ["--publisher", f"wss://localhost:{self.pipeline.publisherPort}",
             "--subscriber", f"wss://localhost:{self.pipeline.subscriberPort}", "--ca", caPath(), *argv]
        )

    async def test_publishAndSubscribe(self) -> None:
        """
        "sub" prints what "pub" publishes, as <[topic] content.
        """
        args = await self.arguments("sub", "news")
        self.patch(sys, "stderr", io.StringIO())
        out = io.StringIO()
        subscribing = Deferred.fromCoroutine(subscribe(reactor, args, out))
        await waitFor(lambda: self.pipeline.reader.registry.subscribers("news"), what="the subscription")
        pubArgs = parser().parse_args(
            ["--publisher", args.publisher, "--ca", caPath(), "pub", "news", "hello", "world"]
        )
        published = io.StringIO()
        self.assertEqual(await publishOne(reactor, pubArgs, published), 0)
        self.assertEqual(published.getvalue(), "published\n")
        await waitFor(lambda: "<[news] hello world\n" in out.getvalue(), what="the printed message")
        for connection in list(self.pipeline.reader.registry.subscribers("news")):
            connection.connection.sendClose(1000)
        self.assertEqual(await withTimeout(subscribing), 1)
        self.assertIn("connection closed (code 1000)", sys.stderr.getvalue())

    async def test_publishRefused(self) -> None:
        """
        "pub" exits 1 when the publisher answers with an Error.
        """
        args = await self.arguments("pub", "bad topic", "x")
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(await publishOne(reactor, args, io.StringIO()), 1)
        self.assertIn("error: Topic must not contain whitespace", sys.stderr.getvalue())


class CommandTests(TestCase):
    timeout = 30

    async def test_commandLine(self) -> None:
        """
        The console script publishes; a wrong password exits 1 with one line naming 401.
        """
        pipeline = await startPipeline(self)
        clients = Clients(self)
        subscriber = await clients.connect(pipeline.subscriberPort, "/subscribe")
        subscriber.sendMessage(b'{"Topic": "cmd", "Content": "sub", "Id": 1}')
        self.assertEqual(await nextJSON(subscriber), {"Ack": 1})
        env = dict(os.environ, PYTHONPATH=ROOT, WS_CERT_DIR=certDir())
        base = ["-m", "wsqueue.client", "--publisher", f"wss://localhost:{pipeline.publisherPort}"]
        out, err, code = await getProcessOutputAndValue(sys.executable, [*base, "pub", "cmd", "from", "shell"], env=env)
        self.assertEqual((code, out), (0, b"published\n"), err)
        self.assertEqual((await nextJSON(subscriber))["Content"], "from shell")
        out, err, code = await getProcessOutputAndValue(sys.executable, [*base, "--password", "x", "pub", "cmd", "y"], env=env)
        self.assertEqual(code, 1)
        self.assertIn(b"401", err)
        self.assertNotIn(b"Traceback", err)
