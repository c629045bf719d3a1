"""
What the tests share: development certificates, TLS listeners on loopback, a
recording WebSocket client, raw HTTP requests over TLS, and waiting on a condition
with a deadline (never a fixed sleep).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable

from autobahn.twisted.websocket import WebSocketClientFactory
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from wsqueue import tls
from wsqueue.auth import basicHeader
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.client import ClientProtocol
from wsqueue.tap import msgqueue, publisher, subscriber
from wsqueue.testing import AcceptingAuthenticator, MemoryServerTransport  # noqa: F401 -- test_frames, test_compat import them from here
from wsqueue.tls import clientEndpoint

_certDir: str | None = None


def memoryStoreArguments(module) -> list[str]:
    """
    C{--store memory} for the plugins that have a store (msgqueue, the all-in-one),
    so that tests of their options and services write no files.
    """
    return ["--store", "memory"] if "store" in module.Options() else []


class DaemonOptionsMixin:
    """
    For a C{SynchronousTestCase} of the plugins' options and services: a clean
    environment (defaults must not depend on whoever runs the tests), development
    certificates in C{certDir}, a L{MemoryReactorClock} in C{reactor}, and
    L{options} parsing a plugin's arguments as twistd would.
    """

    def setUp(self) -> None:
        self.patch(os, "environ", {})
        self.certDir = self.mktemp()
        makeDevelopmentCertificates(self.certDir)
        self.reactor = MemoryReactorClock()

    def options(self, module, *argv: str):
        options = module.Options()
        options.parseOptions(["--cert-dir", self.certDir, *memoryStoreArguments(module), *argv])
        return options


def certDir() -> str:
    """
    A folder with a development CA and server certificate, made once per test run.
    """
    global _certDir
    if _certDir is None:
        _certDir = tempfile.mkdtemp(prefix="wsqueue-test-certs-")
        atexit.register(shutil.rmtree, _certDir, True)
        makeDevelopmentCertificates(_certDir)
    return _certDir


def caPath() -> str:
    return os.path.join(certDir(), "ca.crt")


def listenTLS(testCase: TestCase, factory, port: int = 0) -> int:
    """
    Serve C{factory} over TLS on a loopback port (a free one by default) until the
    test ends, as the daemons do (L{tls.serverEndpoint}); return the port.
    """
    listening: list = []
    tls.serverEndpoint(reactor, port, "127.0.0.1", certDir()).listen(factory).addCallback(listening.append)
    testCase.addCleanup(listening[0].stopListening)
    return listening[0].getHost().port


def waitFor(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> Deferred:
    """
    Fire once C{predicate()} is true, polling; fail with a clear message at the deadline.
    """
    deadline = reactor.seconds() + timeout

    def check():
        result = predicate()
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        return task.deferLater(reactor, interval, check)

    return task.deferLater(reactor, 0, check)


def withTimeout(d: Deferred, timeout: float = 10.0, what: str = "") -> Deferred:
    """
    C{d}, failing with a clear message if it has not fired within C{timeout}.
    """
    result = Deferred()
    call = reactor.callLater(timeout, lambda: result.called or result.errback(AssertionError(f"timed out after {timeout} s: {what}")))

    def done(value):
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(value)

    d.addBoth(done)
    return result


class Clients:
    """
    Opens recording WebSocket clients and closes them all when the test ends.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.open: list[ClientProtocol] = []
        testCase.addCleanup(self.closeAll)

    def connect(
        self, port: int, path: str, user: str = "hello", password: str = "test", headers: dict | None = None,
        compress: bool = False,
    ) -> Deferred[ClientProtocol]:
        """
        Connect to C{wss://localhost:port/path}; fails with L{HandshakeFailed} if refused.
        C{compress} offers permessage-deflate.
        """

        async def connect() -> ClientProtocol:
            protocol = await self.connectRaw(port, path, user, password, headers, compress)
            return await withTimeout(protocol.opened, what=f"opening {path}")

        return Deferred.fromCoroutine(connect())

    async def connectRaw(self, port, path, user="hello", password="test", headers=None, compress=False) -> ClientProtocol:
        url = f"wss://localhost:{port}{path}"
        allHeaders = {} if user is None else {"Authorization": basicHeader(user, password)}
        allHeaders.update(headers or {})
        factory = WebSocketClientFactory(url, headers=allHeaders, reactor=reactor)
        factory.protocol = ClientProtocol
        factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2, maxMessagePayloadSize=0)
        if compress:
            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=PerMessageDeflateResponseAccept,
            )
        protocol = await clientEndpoint(reactor, url, caPath()).connect(factory)
        self.open.append(protocol)
        return protocol

    def closeAll(self) -> Deferred:
        waiting = []
        for protocol in self.open:
            if not protocol.closed.called:
                if protocol.state == protocol.STATE_OPEN:
                    protocol.sendClose(1000)
                else:
                    protocol.dropConnection(abort=True)
                waiting.append(withTimeout(_observe(protocol.closed), 5, "client close"))
        return DeferredList(waiting)


def _observe(d: Deferred) -> Deferred:
    """
    A Deferred that fires when C{d} does, without taking C{d}'s result.
    """
    observer = Deferred()

    def fire(result):
        observer.callback(result)
        return result

    d.addBoth(fire)
    return observer


async def nextFrame(protocol: ClientProtocol, timeout: float = 10.0) -> bytes | None:
    """
    The next frame the client received (L{None} once it is closed).
    """
    return await withTimeout(protocol.frames.get(), timeout, "the next frame")


async def nextJSON(protocol: ClientProtocol, timeout: float = 10.0):
    import json

    frame = await nextFrame(protocol, timeout)
    assert frame is not None, "connection closed instead of a frame"
    return json.loads(frame)


async def noFrameWithin(protocol: ClientProtocol, seconds: float) -> None:
    """
    Check that nothing arrives for C{seconds}.  (A bounded wait is the only way to
    check that something does I{not} happen; it never synchronises anything.)
    """
    await task.deferLater(reactor, seconds, lambda: None)
    assert not protocol.frames.pending, f"unexpected frames {protocol.frames.pending!r}"


class _RawHTTP(Protocol):
    def __init__(self, request: bytes, done: Deferred) -> None:
        self.request = request
        self.done = done
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


def rawRequest(port: int, request: bytes) -> Deferred[bytes]:
    """
    Send raw bytes over TLS and fire with everything the server answered before closing.
    """
    done: Deferred[bytes] = Deferred()
    factory = ClientFactory.forProtocol(lambda: _RawHTTP(request, done))
    endpoint = clientEndpoint(reactor, f"wss://localhost:{port}", caPath())
    endpoint.connect(factory).addErrback(done.errback)
    return withTimeout(done, what="raw HTTP response")


def upgradeRequest(port: int, path: str, authorization: str | None = None, upgrade: bool = True) -> bytes:
    """
    A WebSocket upgrade request (or a plain GET), optionally with an Authorization header.
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: localhost:{port}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                  "Sec-WebSocket-Version: 13"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def assertHandshakeRefusals(testCase: TestCase, port: int, path: str) -> None:
    """
    C{path} refuses wrong credentials with 401 and a plain (non-upgrade) GET with 400,
    as the Go project's per-service tests checked.
    """
    response = await rawRequest(port, upgradeRequest(port, path, basicHeader("hello", "nope")))
    testCase.assertTrue(response.startswith(b"HTTP/1.1 401"), response)
    response = await rawRequest(port, upgradeRequest(port, path, basicHeader("hello", "test"), upgrade=False))
    testCase.assertTrue(response.startswith(b"HTTP/1.1 400"), response)


# The separate daemons' plugins (module, default port), and those that link to msgqueue.
TAPS = {
    "wsqueue-msgqueue": (msgqueue, 8080),
    "wsqueue-publisher": (publisher, 8081),
    "wsqueue-subscriber": (subscriber, 8082),
}
LINKED = {"wsqueue-publisher": publisher, "wsqueue-subscriber": subscriber}
