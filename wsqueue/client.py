# -*- test-case-name: tests.test_client -*-
"""
C{wsqueue-client}: publish and subscribe from a terminal.

  wsqueue-client pub TOPIC MESSAGE     publish one message and wait for its Ack
  wsqueue-client sub TOPIC [TOPIC...]  print messages as they arrive (Ctrl-C stops)
  wsqueue-client                       interactive, as the Go demo client:
                                       "sub t", "unsub t", "t text", "exit"

Received messages print as C{<[topic] content}.

Every way out (done, an error, Ctrl-C, "exit", the end of standard input) closes the
WebSockets with a closing handshake (L{Session.close}), so that the servers log a
clean close instead of a dropped connection.  Everything that waits on the network
is bounded by C{--timeout}, and every failure a person can meet is one line on
standard error (L{describeHandshakeFailure}), never a traceback.  L{ClientProtocol}
is also the recording client of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TextIO
from urllib.parse import urlsplit, urlunsplit

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import stdio, task
from twisted.internet.defer import Deferred, DeferredQueue, TimeoutError, gatherResults, succeed
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from wsqueue import wire
from wsqueue.auth import DEMO_PASSWORD, DEMO_USER, basicHeader
from wsqueue.link import ClientConnection, HandshakeFailed
from wsqueue.tls import TLSConfigurationError, clientEndpoint, defaultCAPath, defaultCertDir, parseURL

DEFAULT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
"""How long a closing handshake may take before the connection is dropped."""
PUBLISH_PATH = "/publish"
SUBSCRIBE_PATH = "/subscribe"
INTERACTIVE_USAGE = "usage: sub TOPIC | unsub TOPIC | TOPIC MESSAGE... | exit"

DESCRIPTION = """\
Publish and subscribe to wsqueue from a terminal, over wss://.

Without a command, interactive: type "sub TOPIC", "unsub TOPIC", "TOPIC MESSAGE..."
or "exit" (or end the input); each message published prints "published" or the error.

Messages print as <[topic] content; "sub" also prints, on standard error, where to
resume after each one: (--since OFFSET:EPOCH). A failure prints one line on standard
error and the exit status is 1.
"""
"""The C{--help} text: plain, unlike the module docstring (argparse prints it as it is)."""


class ClientError(Exception):
    """
    A failure the person at the terminal can act on, said in one line.
    """


class ClientProtocol(ClientConnection):
    """
    A WebSocket whose incoming frames are queued for the command to read (L{None}
    once it closed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.frames: DeferredQueue = DeferredQueue()

    def frameReceived(self, payload: bytes, isBinary: bool) -> None:
        self.frames.put(payload)

    def handshakeFailed(self, failure: HandshakeFailed) -> None:
        self.frames.put(None)

    def connectionClosed(self, code: int | None, reason: str | None) -> None:
        self.frames.put(None)


def endpointURL(base: str, path: str) -> str:
    """
    The URL of the endpoint C{path} (C{/publish}, C{/subscribe}) at C{base}.

    People copy both forms: the server's address (C{wss://host:8081}, as the README
    gives it) and the endpoint's (C{wss://host:8081/publish}, as other clients need
    it), with or without a trailing slash.  Any other path is kept as a prefix, for a
    server behind a proxy that serves it under one.
    """
    parts = urlsplit(base)
    prefix = parts.path.rstrip("/")
    if not prefix.endswith(path):
        prefix += path
    return urlunsplit(parts._replace(path=prefix))


def describeHandshakeFailure(failure: HandshakeFailed, host: str, port: int, path: str, option: str) -> str:
    """
    Say why the WebSocket to C{host:port} did not open, in terms of what to change.
    """
    if failure.status == 401:
        return "wrong user or password (set --user/--password or WSQUEUE_USER/WSQUEUE_PASSWORD)"
    if failure.status == 404:
        said = f": {failure.statusReason}" if failure.statusReason else ""
        return f"{host}:{port} has no endpoint {path} (HTTP 404{said}); check {option}"
    if failure.status is not None:
        said = f" ({failure.statusReason})" if failure.statusReason else ""
        return f"{host}:{port} refused the WebSocket on {path} with HTTP {failure.status}{said}"
    lost = failure.lost
    # By name: only wsqueue.tls imports OpenSSL and service_identity.
    if lost is not None and lost.check("service_identity.exceptions.VerificationError"):
        return f"certificate not valid for {host}: connect with a name it lists, or --insecure for testing"
    if lost is not None and lost.check("OpenSSL.SSL.Error"):
        if "certificate verify failed" in str(lost.value):
            return "certificate not trusted: pass --ca FILE or --cert-dir DIR (or --insecure for testing)"
        return f"TLS handshake with {host}:{port} failed ({lost.getErrorMessage()}); is it a wsqueue server?"
    return f"cannot open a WebSocket to {host}:{port}{path}: {failure.reason}"


def formatFrame(payload: bytes) -> tuple[str, bool]:
    """
    Render a frame for a person: C{<[topic] content} for a message; say whether it is
    an error.
    """
    return _formatDecoded(payload, wire.decodeJSON(payload))


def _formatDecoded(payload: bytes, frame: object) -> tuple[str, bool]:
    if isinstance(frame, wire.WireError):
        return payload.decode("utf-8", "replace"), False
    if isinstance(frame, dict) and "Topic" in frame and "Content" in frame:
        return f"<[{frame['Topic']}] {frame['Content']}", False
    if isinstance(frame, dict) and set(frame) == {"Ack"}:
        return f"acknowledged {frame['Ack']}", False
    if isinstance(frame, dict) and "Error" in frame:
        return f"error: {frame['Error']}", True
    return payload.decode("utf-8", "replace"), False


def noAcknowledgement(timeout: float) -> str:
    """
    What a publisher that holds a message without acknowledging it most likely means.
    """
    return f"no acknowledgement within {timeout:g} s (is msgqueue running?)"


class Session:
    """
    The WebSockets one command opens, with its options: opening is bounded by
    C{--timeout}, and L{close} ends them all with a closing handshake, whatever ends
    the command.

    @ivar closing: set once L{close} was called: a connection closing after that is
        the command ending, not a failure to report.
    """

    def __init__(self, reactor, args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.args = args
        self.connections: list[ClientProtocol] = []
        self.closing = False

    async def connect(self, base: str, path: str, option: str) -> ClientProtocol:
        """
        Open the WebSocket to endpoint C{path} of the server C{base} (given by C{option}),
        or raise L{ClientError} saying why not within C{--timeout}.
        """
        url = endpointURL(base, path)
        host, port, _ = parseURL(url)
        factory = WebSocketClientFactory(
            url, headers={"Authorization": basicHeader(self.args.user, self.args.password)}, reactor=self.reactor
        )
        factory.protocol = ClientProtocol
        # The opening handshake is bounded below, with the TCP and TLS connection.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=CLOSE_TIMEOUT)
        caPath = self.args.ca or defaultCAPath(self.args.cert_dir)
        endpoint = clientEndpoint(self.reactor, url, caPath, self.args.insecure)
        attempt = Deferred.fromCoroutine(self._open(endpoint, factory))
        attempt.addTimeout(self.args.timeout, self.reactor)
        try:
            return await attempt
        except TimeoutError:
            raise ClientError(f"cannot connect to {host}:{port}: no answer within {self.args.timeout:g} s") from None
        except ConnectionRefusedError:
            raise ClientError(f"cannot connect to {host}:{port}: connection refused") from None
        except DNSLookupError:
            raise ClientError(f"cannot connect to {host}:{port}: unknown host") from None
        except ConnectError as e:
            raise ClientError(f"cannot connect to {host}:{port}: {e}") from None
        except HandshakeFailed as e:
            if self.closing:
                raise ClientError(f"stopped while connecting to {host}:{port}") from None
            raise ClientError(describeHandshakeFailure(e, host, port, urlsplit(url).path, option)) from None

    async def _open(self, endpoint, factory: WebSocketClientFactory) -> ClientProtocol:
        protocol = await endpoint.connect(factory)
        self.connections.append(protocol)
        return await protocol.opened

    async def nextFrame(self, connection: ClientProtocol, timeout: float) -> bytes | None:
        """
        The next frame from C{connection} (L{None} once it closed); fails with
        L{TimeoutError} after C{timeout} seconds.
        """
        waiting = connection.frames.get()
        waiting.addTimeout(timeout, self.reactor)
        return await waiting

    def close(self) -> Deferred[None]:
        """
        Close every connection with code 1000 and fire once the servers answered.
        Autobahn drops a connection whose server does not answer within
        L{CLOSE_TIMEOUT} (and one still opening at once), so this is bounded.
        """
        self.closing = True
        waiting = []
        for connection in self.connections:
            if connection.closed.called:
                continue
            if connection.state == connection.STATE_OPEN:
                connection.sendClose(1000)
            elif connection.state != connection.STATE_CLOSING:
                connection.dropConnection(abort=True)
            waiting.append(_observe(connection.closed))
        return gatherResults(waiting).addCallback(lambda _: None) if waiting else succeed(None)


def _observe(d: Deferred) -> Deferred:
    """
    A Deferred that fires when C{d} does, leaving C{d}'s result to its other waiters.
    """
    observer: Deferred = Deferred()

    def fire(result: object) -> object:
        observer.callback(None)
        return result

    d.addBoth(fire)
    return observer


def _ignoreTimeout(failure: Failure) -> None:
    failure.trap(TimeoutError)


def _closeCode(code: int | None, reason: str | None) -> str:
    said = f", {reason}" if reason else ""
    return f"code {code}{said}"


async def publishOne(session: Session, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    C{pub}: publish one message and wait, at most C{--timeout}, for its Ack or Error.
    """
    connection = await session.connect(args.publisher, PUBLISH_PATH, "--publisher")
    connection.sendMessage(wire.encode({"Topic": args.topic, "Content": " ".join(args.message), "Id": 1}))
    try:
        reply = await session.nextFrame(connection, args.timeout)
    except TimeoutError:
        raise ClientError(noAcknowledgement(args.timeout)) from None
    if reply is None:
        code, reason = await connection.closed
        if session.closing:
            raise ClientError("stopped before an acknowledgement came: the message may or may not be published")
        raise ClientError(f"the publisher closed the connection before acknowledging ({_closeCode(code, reason)})")
    text, isError = formatFrame(reply)
    if isError:
        print(text, file=err)
        return 1
    print("published", file=out)
    return 0


async def subscribe(session: Session, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    C{sub}: print what arrives on the topics until the server closes the connection
    (exit 1) or the command is stopped (L{Session.close}, exit 0).
    """
    connection = await session.connect(args.subscriber, SUBSCRIBE_PATH, "--subscriber")
    for number, topic in enumerate(args.topics, 1):
        request: dict = {"Topic": topic, "Content": "sub", "Id": number}
        if args.since is not None:
            request["Since"] = {"Offset": args.since[0], "Epoch": args.since[1]}
        connection.sendMessage(wire.encode(request))
    while True:
        payload = await connection.frames.get()
        if payload is None:
            code, reason = await connection.closed
            if session.closing:
                return 0
            print(f"connection closed ({_closeCode(code, reason)})", file=err)
            return 1
        if payload.startswith(b'{"Ack":'):
            # The subscriptions' acknowledgements: only a recovery's is news to a person.
            recovery = describeRecovery(payload, args.topics)
            if recovery:
                print(recovery, file=err, flush=True)
            continue
        frame = wire.decodeJSON(payload)
        text, isError = _formatDecoded(payload, frame)
        print(text, file=err if isError else out, flush=True)
        position = resumePoint(frame)
        if position:
            # Where to resume from after this message: on standard error, so that
            # standard output stays the messages alone.
            print(position, file=err, flush=True)


def describeRecovery(payload: bytes, topics: Sequence[str]) -> str | None:
    """
    What a subscribe with C{Since} came to, for a person; L{None} for a plain Ack.
    """
    frame = wire.decodeJSON(payload)
    if not isinstance(frame, dict) or "Recovered" not in frame:
        return None
    number = frame.get("Ack")
    topic = topics[number - 1] if isinstance(number, int) and 0 < number <= len(topics) else "?"
    if frame["Recovered"] is True:
        return f"{topic}: recovered: what was missed follows, then live messages"
    return (f"{topic}: NOT recovered (msgqueue is at {frame.get('Offset')}:{frame.get('Epoch')}): "
            "reload your state; live messages follow")


def resumePoint(frame: object) -> str | None:
    """
    C{(--since OFFSET:EPOCH)} for a delivered message (decoded): how to resume after it.
    """
    if isinstance(frame, dict) and isinstance(frame.get("Offset"), int) and isinstance(frame.get("Epoch"), str):
        return f"(--since {frame['Offset']}:{frame['Epoch']})"
    return None


def sincePoint(text: str) -> tuple[int, str]:
    """
    C{OFFSET:EPOCH}, as C{sub --since} takes it (what L{resumePoint} prints).
    """
    offset, sep, epoch = text.partition(":")
    if not sep or not offset.isdigit() or not epoch:
        raise argparse.ArgumentTypeError(f"{text!r} is not OFFSET:EPOCH (as printed after each message, e.g. 17:9f2c...)")
    return int(offset), epoch


@implementer(IHalfCloseableProtocol)
class _Interactive(LineReceiver):
    """
    The interactive mode's standard input and output.

    Each message is published with an C{Id}, so that its Ack or Error can be matched
    and reported; a message without an answer within C{timeout} is reported too.
    "exit" and the end of the input wait for the answers still due, so that
    C{printf 'news hi\\n' | wsqueue-client} reports what became of its message.
    Output goes through the transport, not C{print}: standard I/O makes standard
    output non-blocking, where a plain write can fail.

    @ivar done: fires with the exit status once the session should end.
    @ivar finished: fires once standard I/O is closed (what was shown is written).
    """

    delimiter = b"\n"
    # Standard I/O, from the start: StandardIO connects this protocol as it makes it.
    transport: stdio.StandardIO

    def __init__(
        self, publisher: ClientProtocol, subscriber: ClientProtocol, err: TextIO, clock, timeout: float
    ) -> None:
        self.publisher = publisher
        self.subscriber = subscriber
        self.err = err
        self.clock = clock
        self.timeout = timeout
        self.done: Deferred[int] = Deferred()
        self.finished: Deferred[None] = Deferred()
        self._ending = False
        self._lastId = 0
        self._waiting: dict[int, IDelayedCall] = {}

    def show(self, text: str) -> None:
        self.transport.write(text.encode("utf-8", "replace") + b"\n")

    def complain(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text or self._ending:
            return
        if text == "exit":
            self._end()
            return
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        if not rest:
            self.complain(INTERACTIVE_USAGE)
        elif command in ("sub", "unsub"):
            self.subscriber.sendMessage(f"{command} {rest}".encode())
        else:
            self._publish(command, rest)

    def _publish(self, topic: str, content: str) -> None:
        self._lastId += 1
        requestId = self._lastId
        self._waiting[requestId] = self.clock.callLater(self.timeout, self._unanswered, requestId)
        self.publisher.sendMessage(wire.encode({"Topic": topic, "Content": content, "Id": requestId}))

    def _unanswered(self, requestId: int) -> None:
        del self._waiting[requestId]
        self.complain(noAcknowledgement(self.timeout))
        self._settle()

    def publisherFrame(self, payload: bytes) -> None:
        """
        Report the Ack or Error of a message published here.
        """
        frame = wire.decodeJSON(payload)
        requestId = frame.get("Id", frame.get("Ack")) if isinstance(frame, dict) else None
        call = self._waiting.pop(requestId, None) if isinstance(requestId, int) else None
        if call is not None:
            call.cancel()
        if call is not None and isinstance(frame, dict) and "Ack" in frame:
            self.show("published")
        else:
            self.subscriberFrame(payload)
        self._settle()

    def subscriberFrame(self, payload: bytes) -> None:
        """
        Show a message; an error goes to standard error.
        """
        text, isError = formatFrame(payload)
        if isError:
            self.complain(text)
        else:
            self.show(text)

    def readConnectionLost(self) -> None:
        self._end()

    def writeConnectionLost(self) -> None:
        self._end()

    def _end(self) -> None:
        self._ending = True
        self.transport.pauseProducing()
        self._settle()

    def _settle(self) -> None:
        if self._ending and not self._waiting:
            self.stop(0)

    def stop(self, status: int) -> None:
        """
        End the session with C{status}, forgetting the answers still due.
        """
        for call in self._waiting.values():
            call.cancel()
        self._waiting.clear()
        if not self.done.called:
            self.done.callback(status)

    def close(self) -> Deferred[None]:
        """
        Stop reading and close standard output once what was shown is written; fire
        then, or after L{CLOSE_TIMEOUT} if standard output does not take it.
        """
        self.stop(0)
        if self.finished.called:
            return succeed(None)
        self.transport.loseConnection()
        flushed = _observe(self.finished)
        flushed.addTimeout(CLOSE_TIMEOUT, self.clock)
        flushed.addErrback(_ignoreTimeout)
        return flushed

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.stop(0)
        self.finished.callback(None)


async def interactive(session: Session, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    No command: read commands from standard input until "exit" or its end (exit 0),
    or until a server closes a connection (exit 1).  Shows what arrives on standard
    output through L{stdio.StandardIO}, not C{out}.
    """
    publisher = await session.connect(args.publisher, PUBLISH_PATH, "--publisher")
    subscriber = await session.connect(args.subscriber, SUBSCRIBE_PATH, "--subscriber")
    terminal = _Interactive(publisher, subscriber, err, session.reactor, args.timeout)
    stdio.StandardIO(terminal, reactor=session.reactor)

    async def readFrames(connection: ClientProtocol, handle: Callable[[bytes], None], name: str) -> None:
        while (payload := await connection.frames.get()) is not None:
            handle(payload)
        code, reason = await connection.closed
        if not terminal.done.called and not session.closing:
            terminal.complain(f"the {name} closed the connection ({_closeCode(code, reason)})")
            terminal.stop(1)

    Deferred.fromCoroutine(readFrames(publisher, terminal.publisherFrame, "publisher"))
    Deferred.fromCoroutine(readFrames(subscriber, terminal.subscriberFrame, "subscriber"))
    status = await terminal.done
    await terminal.close()
    return status


Command = Callable[[Session, argparse.Namespace, TextIO, TextIO], Awaitable[int]]
COMMANDS: dict[str | None, Command] = {"pub": publishOne, "sub": subscribe, None: interactive}


def execute(reactor, args: argparse.Namespace, out: TextIO, err: TextIO, session: Session | None = None) -> Deferred[int]:
    """
    Run the command C{args} name; fire with the exit status once every connection is
    closed.  A failure is one line on C{err}, never a traceback.
    """
    session = session or Session(reactor, args)

    async def run() -> int:
        try:
            return await COMMANDS[args.command](session, args, out, err)
        except (ClientError, TLSConfigurationError, ValueError) as e:
            print(f"wsqueue-client: {e}", file=err)
        except Exception as e:  # noqa: BLE001 -- a bug still gets one line, not a traceback
            print(f"wsqueue-client: unexpected {type(e).__name__}: {e}", file=err)
        finally:
            await session.close()
        return 1

    return Deferred.fromCoroutine(run())


def positiveSeconds(text: str) -> float:
    """
    Read C{--timeout}: a positive number of seconds.
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def parser() -> argparse.ArgumentParser:
    """
    The command line; every option's help ends with its default.
    """
    p = argparse.ArgumentParser(prog="wsqueue-client", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--publisher", metavar="URL", default="wss://localhost:8081",
                   help="the publisher, with or without /publish (default: %(default)s)")
    p.add_argument("--subscriber", metavar="URL", default="wss://localhost:8082",
                   help="the subscriber, with or without /subscribe (default: %(default)s)")
    p.add_argument("--user", metavar="USER", default=os.environ.get("WSQUEUE_USER", DEMO_USER),
                   help=f"user name (default: $WSQUEUE_USER, else {DEMO_USER})")
    p.add_argument("--password", metavar="PASSWORD", default=os.environ.get("WSQUEUE_PASSWORD", DEMO_PASSWORD),
                   help="password (default: $WSQUEUE_PASSWORD, else the demo password)")
    p.add_argument("--cert-dir", metavar="DIR", default=defaultCertDir(),
                   help="the folder whose ca.crt is trusted (default: $WS_CERT_DIR, else ./certs)")
    p.add_argument("--ca", metavar="FILE",
                   help="the CA certificate to trust (default: DIR/ca.crt if it exists, else the system's trust store)")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the servers' certificates, for testing only (default: verify them)")
    p.add_argument("--timeout", metavar="SECONDS", type=positiveSeconds, default=DEFAULT_TIMEOUT,
                   help="how long to wait for a connection and for each acknowledgement (default: %(default)g)")
    commands = p.add_subparsers(dest="command", title="commands", metavar="{pub,sub}")
    pubHelp = "publish one message; exit 0 once the publisher acknowledges it"
    pub = commands.add_parser("pub", help=pubHelp, description=pubHelp.capitalize() + ".")
    pub.add_argument("topic", metavar="TOPIC")
    pub.add_argument("message", metavar="MESSAGE", nargs="+", help="the message: the words joined by spaces")
    subHelp = "print messages on these topics as they arrive, until Ctrl-C"
    sub = commands.add_parser("sub", help=subHelp, description=subHelp.capitalize() + ".")
    sub.add_argument("topics", metavar="TOPIC", nargs="+")
    sub.add_argument("--since", metavar="OFFSET:EPOCH", type=sincePoint, default=None,
                     help="first deliver what was missed after this message (printed after each one on standard "
                          "error), if msgqueue still holds all of it")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> NoReturn:
    """
    The C{wsqueue-client} console script.  Ctrl-C (or SIGTERM) stops the reactor;
    the connections are closed with a handshake before it stops.
    """
    args = parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr

    def start(reactor) -> Deferred[None]:
        session = Session(reactor, args)
        reactor.addSystemEventTrigger("before", "shutdown", session.close)
        return execute(reactor, args, out, err, session).addCallback(_exitCode)

    task.react(start)


def _exitCode(code: int) -> None:
    if code:
        raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
