# -*- test-case-name: tests.test_client -*-
"""
C{wsqueue-client}: publish and subscribe from a terminal.

  wsqueue-client pub TOPIC MESSAGE     publish one message and wait for its Ack
  wsqueue-client sub TOPIC [TOPIC...]  print messages as they arrive (Ctrl-C stops)
  wsqueue-client                       interactive, as the Go demo client:
                                       "sub t", "unsub t", "t text", "exit"

Received messages print as C{<[topic] content}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import stdio, task
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.protocols.basic import LineReceiver

from wsqueue import wire
from wsqueue.auth import DEMO_PASSWORD, DEMO_USER, basicHeader
from wsqueue.link import HandshakeFailed, LinkProtocol
from wsqueue.tls import TLSConfigurationError, clientEndpoint, defaultCAPath, defaultCertDir


class ClientProtocol(LinkProtocol):
    """
    A WebSocket whose incoming frames are queued for the command to read.
    """

    def __init__(self) -> None:
        WebSocketClientProtocol.__init__(self)
        self.opened = Deferred()
        self.closed = Deferred()
        self._lostReason = None
        self.frames: DeferredQueue = DeferredQueue()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.put(payload)

    def onClose(self, wasClean: bool, code, reason) -> None:
        if not self.opened.called:
            self.opened.errback(HandshakeFailed(self._status(), self._why(reason)))
        self.frames.put(None)
        self.closed.callback((code, reason))


def formatFrame(payload: bytes) -> tuple[str, bool]:
    """
    Render a frame for a person: C{<[topic] content} for a message; say whether it is
    an error.
    """
    try:
        frame = json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace"), False
    if isinstance(frame, dict) and "Topic" in frame and "Content" in frame:
        return f"<[{frame['Topic']}] {frame['Content']}", False
    if isinstance(frame, dict) and set(frame) == {"Ack"}:
        return f"acknowledged {frame['Ack']}", False
    if isinstance(frame, dict) and "Error" in frame:
        return f"error: {frame['Error']}", True
    return payload.decode("utf-8", "replace"), False


async def connect(reactor, url: str, args) -> ClientProtocol:
    """
    Open a WebSocket to C{url} with the command's credentials and TLS settings.
    """
    factory = WebSocketClientFactory(url, headers={"Authorization": basicHeader(args.user, args.password)}, reactor=reactor)
    factory.protocol = ClientProtocol
    caPath = args.ca or defaultCAPath(args.cert_dir)
    endpoint = clientEndpoint(reactor, url, caPath, args.insecure)
    protocol = await endpoint.connect(factory)
    return await protocol.opened


async def publishOne(reactor, args, out: TextIO) -> int:
    connection = await connect(reactor, args.publisher.rstrip("/") + "/publish", args)
    connection.sendMessage(wire.encode({"Topic": args.topic, "Content": " ".join(args.message), "Id": 1}))
    reply = await connection.frames.get()
    connection.sendClose(1000)
    text, isError = formatFrame(reply) if reply is not None else ("error: connection closed", True)
    if isError:
        print(text, file=sys.stderr)
        return 1
    print("published", file=out)
    return 0


async def subscribe(reactor, args, out: TextIO) -> int:
    connection = await connect(reactor, args.subscriber.rstrip("/") + "/subscribe", args)
    for number, topic in enumerate(args.topics, 1):
        connection.sendMessage(wire.encode({"Topic": topic, "Content": "sub", "Id": number}))
    while True:
        payload = await connection.frames.get()
        if payload is None:
            code, reason = await connection.closed
            print(f"connection closed (code {code}{', ' + reason if reason else ''})", file=sys.stderr)
            return 1
        if payload.startswith(b'{"Ack":'):
            # The subscriptions' acknowledgements: nothing for a person to read.
            continue
        text, isError = formatFrame(payload)
        print(text, file=sys.stderr if isError else out, flush=True)


class _Interactive(LineReceiver):
    delimiter = b"\n"

    def __init__(self, publisher: ClientProtocol, subscriber: ClientProtocol, done: Deferred) -> None:
        self.publisher = publisher
        self.subscriber = subscriber
        self.done = done

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        if text == "exit":
            self.transport.loseConnection()
            return
        command, _, rest = text.partition(" ")
        if command in ("sub", "unsub"):
            self.subscriber.sendMessage(text.encode("utf-8"))
        else:
            self.publisher.sendMessage(wire.encode({"Topic": command, "Content": rest}))

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.callback(0)


async def interactive(reactor, args, out: TextIO) -> int:
    publisher = await connect(reactor, args.publisher.rstrip("/") + "/publish", args)
    subscriber = await connect(reactor, args.subscriber.rstrip("/") + "/subscribe", args)
    done: Deferred[int] = Deferred()

    async def printFrames(connection: ClientProtocol) -> None:
        while (payload := await connection.frames.get()) is not None:
            text, isError = formatFrame(payload)
            print(text, file=sys.stderr if isError else out, flush=True)
        if not done.called:
            done.callback(1)

    for connection in (publisher, subscriber):
        Deferred.fromCoroutine(printFrames(connection))
    stdio.StandardIO(_Interactive(publisher, subscriber, done), reactor=reactor)
    result = await done
    for connection in (publisher, subscriber):
        connection.sendClose(1000)
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wsqueue-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--publisher", default="wss://localhost:8081", help="the publisher's URL [%(default)s]")
    p.add_argument("--subscriber", default="wss://localhost:8082", help="the subscriber's URL [%(default)s]")
    p.add_argument("--user", default=os.environ.get("WSQUEUE_USER", DEMO_USER), help="user [$WSQUEUE_USER, else %(default)s]")
    p.add_argument("--password", default=os.environ.get("WSQUEUE_PASSWORD", DEMO_PASSWORD), help="password [$WSQUEUE_PASSWORD, else the demo password]")
    p.add_argument("--cert-dir", default=defaultCertDir(), help="where ca.crt is looked for [$WS_CERT_DIR, else ./certs]")
    p.add_argument("--ca", help="CA certificate to verify the servers against [<cert-dir>/ca.crt if it exists]")
    p.add_argument("--insecure", action="store_true", help="do not verify the servers' certificates")
    commands = p.add_subparsers(dest="command")
    pub = commands.add_parser("pub", help="publish one message")
    pub.add_argument("topic")
    pub.add_argument("message", nargs="+")
    sub = commands.add_parser("sub", help="print messages on these topics as they arrive")
    sub.add_argument("topics", nargs="+")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> None:
    args = parser().parse_args(argv)
    command = {"pub": publishOne, "sub": subscribe, None: interactive}[args.command]

    async def run(reactor) -> int:
        try:
            return await command(reactor, args, out)
        except (HandshakeFailed, TLSConfigurationError, ValueError, OSError) as e:
            print(f"wsqueue-client: {e}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 -- connection errors arrive as many types
            print(f"wsqueue-client: cannot connect: {e}", file=sys.stderr)
        return 1

    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)).addCallback(_exitCode))


def _exitCode(code: int) -> None:
    if code:
        raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
