"""
The library internals wsqueue relies on (L{wsqueue._compat}), each checked on a real
connection (loopback TLS) or on real Autobahn objects: a test here fails, naming the
library and the name in C{wsqueue._compat}, when a Twisted or Autobahn release
changes what wsqueue reads or writes underneath it.
"""

from __future__ import annotations

import socket
from collections import deque

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.application.internet import ClientService, StreamServerEndpointService
from twisted.internet import reactor
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from wsqueue import _compat, tls
from wsqueue.auth import makeAuthenticator
from wsqueue.frames import textFrame
from wsqueue.link import HandshakeFailed
from wsqueue.server import EndpointHandler, Limits, StageServerFactory, StageServerProtocol

from .daemons import freePort
from .helpers import (
    AcceptingAuthenticator,
    Clients,
    MemoryServerTransport,
    certDir,
    listenTLS,
    nextFrame,
    upgradeRequest,
    waitFor,
)
from .test_frames import clientFrame


def changed(library: str, name: str) -> str:
    """
    The message of a failed check: which library changed under which name of ours.
    """
    return (f"{library} changed what wsqueue._compat.{name} relies on "
            f"(checked against {_compat.CHECKED_AGAINST}); update wsqueue._compat or pin {library}")


class _Recording(EndpointHandler):
    def received(self, payload: bytes, isBinary: bool) -> None:
        self.connection.factory.received.append(payload)


class _LeftoversAtOpen(StageServerProtocol):
    """
    Records which handshake leftovers Autobahn had set when the connection opened.
    """

    leftoversAtOpen: list[str] | None = None

    def onOpen(self) -> None:
        self.leftoversAtOpen = [name for name in _compat.AUTOBAHN_HANDSHAKE_LEFTOVERS if name in self.__dict__]
        super().onOpen()


class _RecordingWrites(StageServerProtocol):
    """
    Records every write Autobahn makes through sendData.
    """

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        self.factory.writes.append(data)
        super().sendData(data, sync, chopsize)


class _RealConnection:
    """
    A wsqueue server on loopback TLS, as the daemons listen, and a client to it.
    """

    async def open(self, testCase: TestCase, protocol=StageServerProtocol, limits: Limits | None = None):
        self.factory = StageServerFactory({"/x": _Recording}, makeAuthenticator(None, reactor), limits or Limits(), reactor)
        self.factory.protocol = protocol
        self.factory.received = []
        self.factory.writes = []
        self.clients = Clients(testCase)
        self.port = listenTLS(testCase, self.factory)
        self.client = await self.clients.connect(self.port, "/x")
        [self.connection] = self.factory.connections
        return self


class AutobahnFrameStateTests(TestCase):
    """
    L{_compat.AUTOBAHN_FRAME_STATE}, L{_compat.autobahnBetweenMessages} and
    L{_compat.sendDataWithoutLog}: the reader's and writer's state that
    L{wsqueue.frames.WholeFrames} reads on every message.
    """

    timeout = 20

    async def test_presentBetweenMessages(self) -> None:
        """
        On an open connection, on both ends, every attribute exists and says
        "between messages, plain connection, nothing queued".
        """
        real = await _RealConnection().open(self)
        for protocol in (real.connection, real.client):
            for name in _compat.AUTOBAHN_FRAME_STATE:
                self.assertTrue(hasattr(protocol, name), changed("Autobahn", "AUTOBAHN_FRAME_STATE") + f": no {name}")
            self.assertEqual(protocol.state, WebSocketProtocol.STATE_OPEN, changed("Autobahn", "AUTOBAHN_FRAME_STATE"))
            self.assertEqual(protocol.data, b"", changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": data")
            self.assertIsNone(protocol.current_frame, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": current_frame")
            self.assertIs(protocol.inside_message, False, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": inside_message")
            self.assertIsNone(protocol._perMessageCompress, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": _perMessageCompress")
            self.assertIsInstance(protocol.send_queue, deque, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": send_queue")
            self.assertEqual(len(protocol.send_queue), 0, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": send_queue")
            self.assertTrue(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))
        self.assertEqual(real.connection.maxMessagePayloadSize, Limits().maxMessageSize,
                         changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": maxMessagePayloadSize")
        real.client.sendMessage(b"hello")
        await waitFor(lambda: real.factory.received, what="the message read")
        self.assertEqual(real.factory.received, [b"hello"])
        self.assertTrue(_compat.autobahnBetweenMessages(real.connection), changed("Autobahn", "autobahnBetweenMessages"))

    async def test_partialControlFrameOnARealConnection(self) -> None:
        """
        Part of a ping (left to Autobahn's reader) waits in Autobahn's C{data}, so
        wsqueue does not read frames itself until Autobahn has finished it.
        """
        real = await _RealConnection().open(self)
        ping = clientFrame(9, b"ping")
        real.client.transport.write(ping[:3])
        await waitFor(lambda: real.connection.data, what="Autobahn holding part of a ping")
        self.assertEqual(real.connection.data, ping[:3], changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": data")
        self.assertFalse(_compat.autobahnBetweenMessages(real.connection), changed("Autobahn", "autobahnBetweenMessages"))
        real.client.transport.write(ping[3:])
        await waitFor(lambda: not real.connection.data, what="the ping read")
        self.assertTrue(_compat.autobahnBetweenMessages(real.connection), changed("Autobahn", "autobahnBetweenMessages"))

    async def test_sendQueueKeepsOrder(self) -> None:
        """
        A write Autobahn delays to a later turn waits in C{send_queue}; frames written
        meanwhile go after it, through Autobahn (L{_compat.sendDataWithoutLog}).
        """
        real = await _RealConnection().open(self)
        # The first timed write goes out at once, the second waits for a later turn.
        real.connection.sendData(textFrame(b"first"), sync=True)
        real.connection.sendData(textFrame(b"second"), sync=True)
        self.assertEqual(len(real.connection.send_queue), 1, changed("Autobahn", "sendDataWithoutLog") + ": send_queue")
        real.connection.sendFrames(textFrame(b"third"))
        for expected in (b"first", b"second", b"third"):
            self.assertEqual(await nextFrame(real.client), expected, changed("Autobahn", "sendDataWithoutLog"))
        self.assertEqual(len(real.connection.send_queue), 0, changed("Autobahn", "sendDataWithoutLog") + ": send_queue")


class AutobahnReaderStateTests(SynchronousTestCase):
    """
    What Autobahn's own reader keeps mid-frame and mid-message, fed byte by byte
    to a real Autobahn server protocol (L{_compat.autobahnBetweenMessages}).
    """

    def connection(self, attributes: dict | None = None, **options):
        factory = StageServerFactory({"/x": _Recording}, AcceptingAuthenticator(), Limits(), MemoryReactorClock())
        factory.received = []
        factory.__dict__.update(attributes or {})
        # No timers: Autobahn runs them on the global reactor, not this test's clock.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0,
                                   autoPingTimeout=0, **options)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        protocol.makeConnection(MemoryServerTransport())
        return protocol

    def autobahnReads(self, protocol, data: bytes) -> None:
        # Autobahn's reader alone, without wsqueue's (frames.WholeFrames).
        WebSocketServerProtocol.dataReceived(protocol, data)

    def test_midFrameAndMidMessage(self) -> None:
        protocol = self.connection()
        protocol.dataReceived(upgradeRequest(80, "/x"))
        self.assertTrue(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))
        first = clientFrame(2, b"a" * 300, final=False)
        self.autobahnReads(protocol, first[:8])  # the header and the masking key, no payload
        self.assertIsNotNone(protocol.current_frame, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": current_frame")
        self.assertFalse(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))
        self.autobahnReads(protocol, first[8:])
        self.assertIsNone(protocol.current_frame, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": current_frame")
        self.assertIs(protocol.inside_message, True, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": inside_message")
        self.assertFalse(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))
        self.autobahnReads(protocol, clientFrame(0, b"b"))
        self.assertIs(protocol.inside_message, False, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": inside_message")
        self.assertEqual(protocol.factory.received, [b"a" * 300 + b"b"])
        self.assertTrue(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))

    def test_compressionNegotiated(self) -> None:
        """
        A negotiated compression extension is in C{_perMessageCompress}.
        """
        protocol = self.connection(perMessageCompressionAccept=lambda offers: PerMessageDeflateOfferAccept(offers[0]))
        request = upgradeRequest(80, "/x").replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        protocol.dataReceived(request)
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        self.assertIsNotNone(protocol._perMessageCompress, changed("Autobahn", "AUTOBAHN_FRAME_STATE") + ": _perMessageCompress")
        self.assertFalse(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))

    def test_protocolOptionsCopied(self) -> None:
        """
        The options C{WholeFrames} reads are copied from the factory onto the protocol.
        """
        protocol = self.connection({"logOctets": True, "logFrames": True}, maxMessagePayloadSize=1234)
        protocol.dataReceived(upgradeRequest(80, "/x"))
        self.assertEqual((protocol.logOctets, protocol.logFrames, protocol.maxMessagePayloadSize), (True, True, 1234),
                         changed("Autobahn", "AUTOBAHN_FRAME_STATE"))
        self.assertFalse(_compat.autobahnBetweenMessages(protocol), changed("Autobahn", "autobahnBetweenMessages"))


class AutobahnWritesTests(TestCase):
    """
    L{_compat.AUTOBAHN_WRITE_METHOD}: every write of Autobahn's goes through
    C{sendData}, which the slow-consumer bound counts.
    """

    timeout = 20

    async def test_everyWriteThroughSendData(self) -> None:
        real = await _RealConnection().open(self, protocol=_RecordingWrites)
        writes = real.factory.writes
        self.assertTrue(writes and writes[0].startswith(b"HTTP/1.1 101"), changed("Autobahn", "AUTOBAHN_WRITE_METHOD") + ": handshake")
        real.client.sendPing(b"are you there")
        await waitFor(lambda: any(w[:1] == b"\x8a" for w in writes), what="the pong")
        _compat.sendCloseWithAnyCode(real.connection, 1001, b"bye")
        self.assertEqual(writes[-1][:1], b"\x88", changed("Autobahn", "AUTOBAHN_WRITE_METHOD") + ": close frame")
        await waitFor(lambda: real.client.closed.called, what="the close")


class AutobahnHandshakeTests(TestCase):
    """
    L{_compat.AUTOBAHN_HANDSHAKE_LEFTOVERS}, L{_compat.forgetHandshake},
    L{_compat.handshakeStatusLine}, L{_compat.notCleanReason} and
    L{_compat.sendCloseWithAnyCode}.
    """

    timeout = 20

    # What Autobahn 26.10 keeps of the handshake that wsqueue leaves alone (some are
    # read after the handshake: the version, the extensions and subprotocol in use).
    KEPT = {"http_request_host", "websocket_version", "websocket_origin", "websocket_protocol_in_use",
            "websocket_extensions_in_use"}

    async def test_leftoversSetThenForgotten(self) -> None:
        """
        Autobahn sets every leftover by the time the connection opens, and no
        C{http_*} or C{websocket_*} attribute but those and the known others (a new
        one is to be reviewed), and works on without them.
        """
        real = await _RealConnection().open(self, protocol=_LeftoversAtOpen)
        connection = real.connection
        self.assertEqual(connection.leftoversAtOpen, list(_compat.AUTOBAHN_HANDSHAKE_LEFTOVERS),
                         changed("Autobahn", "AUTOBAHN_HANDSHAKE_LEFTOVERS"))
        self.assertEqual({name for name in connection.__dict__ if name.startswith(("http_", "websocket_"))}, self.KEPT,
                         changed("Autobahn", "AUTOBAHN_HANDSHAKE_LEFTOVERS") + ": what it keeps of the handshake changed")
        pongs = []
        real.client.onPong = pongs.append
        real.client.sendPing(b"p")
        real.client.sendMessage(b"still works")
        await waitFor(lambda: pongs and real.factory.received, what="a pong and the message")
        self.assertEqual((pongs, real.factory.received), ([b"p"], [b"still works"]))
        real.client.sendClose(1000)
        await waitFor(lambda: real.client.closed.called, what="the close")
        self.assertTrue(real.client.wasClean)

    async def test_statusLine(self) -> None:
        """
        A refused handshake's status line is in C{http_status_line} on the client.
        """
        factory = StageServerFactory({"/x": _Recording}, makeAuthenticator(None, reactor), Limits(), reactor)
        port = listenTLS(self, factory)
        clients = Clients(self)
        for path, password, status in [("/x", "wrong", 401), ("/nowhere", "test", 404)]:
            protocol = await clients.connectRaw(port, path, password=password)
            failure = await self.assertFailure(protocol.opened, HandshakeFailed)
            line = _compat.handshakeStatusLine(protocol)
            self.assertIsInstance(line, str, changed("Autobahn", "handshakeStatusLine"))
            self.assertEqual(line.split()[:2], ["HTTP/1.1", str(status)], changed("Autobahn", "handshakeStatusLine"))
            self.assertEqual(failure.status, status)

    async def test_notCleanReason(self) -> None:
        """
        A dropped connection leaves Autobahn's account of it in C{wasNotCleanReason};
        a clean close leaves none.
        """
        real = await _RealConnection().open(self)
        real.connection.transport.abortConnection()
        await waitFor(lambda: real.client.closed.called, what="the drop seen by the client")
        reason = _compat.notCleanReason(real.client)
        self.assertIsInstance(reason, str, changed("Autobahn", "notCleanReason"))
        self.assertIn("dropped", reason, changed("Autobahn", "notCleanReason"))
        clean = await real.clients.connect(real.port, "/x")
        clean.sendClose(1000)
        await waitFor(lambda: clean.closed.called, what="the clean close")
        self.assertIsNone(_compat.notCleanReason(clean), changed("Autobahn", "notCleanReason"))

    async def test_closeTimerCancelledWhenLost(self) -> None:
        """
        A link (or client) whose connection is lost during its closing handshake
        leaves no close timeout behind: Autobahn keeps it scheduled after the loss,
        L{_compat.cancelCloseHandshakeTimer} (called from the link's
        C{connectionLost}) cancels it, or trial finds the reactor unclean.
        """
        real = await _RealConnection().open(self)
        real.client.sendClose(1000)
        self.assertIsNotNone(real.client.closeHandshakeTimeoutCall, changed("Autobahn", "cancelCloseHandshakeTimer"))
        real.connection.transport.abortConnection()
        await waitFor(lambda: real.client.closed.called, what="the loss seen by the client")
        self.assertIsNone(real.client.closeHandshakeTimeoutCall)

    async def test_closeWithAnyCode(self) -> None:
        """
        C{sendCloseFrame} sends codes that C{sendClose} refuses, with their reason.
        """
        real = await _RealConnection().open(self)
        _compat.sendCloseWithAnyCode(real.connection, 1008, b"slow consumer")
        code, reason = await real.client.closed
        self.assertEqual((code, reason), (1008, "slow consumer"), changed("Autobahn", "sendCloseWithAnyCode"))


class AutobahnAutoPingTests(TestCase):
    """
    L{_compat.AUTOBAHN_AUTOPING_STATE}, L{_compat.suspendAutoPing} and
    L{_compat.restartAutoPing}.
    """

    timeout = 20

    async def test_state(self) -> None:
        """
        Once open, the next ping is scheduled on the factory's batched timer; a ping
        sent waits for its pong with a timeout, and the pong clears both and
        schedules the next ping.
        """
        real = await _RealConnection().open(self)
        connection = real.connection
        for name in _compat.AUTOBAHN_AUTOPING_STATE:
            self.assertTrue(hasattr(connection, name), changed("Autobahn", "AUTOBAHN_AUTOPING_STATE") + f": no {name}")
        self.assertTrue(callable(getattr(connection.autoPingPendingCall, "cancel", None)),
                        changed("Autobahn", "AUTOBAHN_AUTOPING_STATE") + ": autoPingPendingCall")
        self.assertIsNone(connection.autoPingTimeoutCall, changed("Autobahn", "AUTOBAHN_AUTOPING_STATE"))
        self.assertTrue(callable(getattr(connection.factory._batched_timer, "call_later", None)),
                        changed("Autobahn", "restartAutoPing") + ": factory._batched_timer")
        pings = []
        answer = real.client.onPing
        real.client.onPing = lambda payload: (pings.append(payload), answer(payload))
        connection.autoPingPendingCall.cancel()
        connection._sendAutoPing()
        self.assertIsNone(connection.autoPingPendingCall, changed("Autobahn", "AUTOBAHN_AUTOPING_STATE"))
        self.assertIsNotNone(connection.autoPingTimeoutCall, changed("Autobahn", "AUTOBAHN_AUTOPING_STATE"))
        pending = connection.autoPingPending
        self.assertIsInstance(pending, bytes, changed("Autobahn", "AUTOBAHN_AUTOPING_STATE") + ": autoPingPending")
        await waitFor(lambda: connection.autoPingPending is None, what="the pong")
        self.assertEqual(pings, [pending], changed("Autobahn", "restartAutoPing") + ": _sendAutoPing")
        self.assertIsNone(connection.autoPingTimeoutCall, changed("Autobahn", "AUTOBAHN_AUTOPING_STATE"))
        self.assertIsNotNone(connection.autoPingPendingCall, changed("Autobahn", "AUTOBAHN_AUTOPING_STATE"))

    async def test_suspendedPongSchedulesNothing(self) -> None:
        """
        Suspended right after a ping went out, its pong arrives and schedules nothing;
        restarting schedules the next ping, which goes out a ping interval later.
        """
        real = await _RealConnection().open(self, limits=Limits(pingInterval=1))
        connection = real.connection
        pongs = []
        connection.onPong = pongs.append
        connection.autoPingPendingCall.cancel()
        connection._sendAutoPing()
        _compat.suspendAutoPing(connection)
        self.assertEqual((connection.autoPingPendingCall, connection.autoPingTimeoutCall, connection.autoPingPending),
                         (None, None, None))
        await waitFor(lambda: pongs, what="the pong")
        self.assertEqual((connection.autoPingPendingCall, connection.autoPingTimeoutCall), (None, None),
                         changed("Autobahn", "suspendAutoPing"))
        pings = []
        answer = real.client.onPing
        real.client.onPing = lambda payload: (pings.append(payload), answer(payload))
        _compat.restartAutoPing(connection)
        self.assertIsNotNone(connection.autoPingPendingCall, changed("Autobahn", "restartAutoPing"))
        await waitFor(lambda: len(pongs) == 2, timeout=5, what="the next ping answered")
        self.assertEqual(pings, [pongs[1]], changed("Autobahn", "restartAutoPing"))


@implementer(IPushProducer)
class _Producer:
    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class TwistedTransportTests(TestCase):
    """
    L{_compat.UNBUFFERED_TLS_PROTOCOL}, L{_compat.unsentBytes}, L{_compat.tcpUnderTLS}
    and L{_compat.setNoDelay} on real TLS connections.
    """

    timeout = 20

    async def test_unbufferedTLS(self) -> None:
        """
        Both ends of a link run over the unbuffered TLS transport, whose writes reach
        the TCP transport at once.
        """
        real = await _RealConnection().open(self)
        for protocol in (real.connection, real.client):
            self.assertIs(type(protocol.transport), _compat.UNBUFFERED_TLS_PROTOCOL,
                          changed("Twisted", "UNBUFFERED_TLS_PROTOCOL"))
        before = _compat.unsentBytes(real.connection)
        self.assertIsNotNone(before, changed("Twisted", "unsentBytes"))
        real.connection.transport.write(textFrame(b"x" * 1000))
        self.assertGreaterEqual(_compat.unsentBytes(real.connection) - before, 1000,
                                changed("Twisted", "UNBUFFERED_TLS_PROTOCOL") + ": the write was held back")
        self.assertEqual(await nextFrame(real.client), b"x" * 1000)

    async def test_unsentBytes(self) -> None:
        """
        Under TLS sits a TCP L{FileDescriptor} with Twisted's write buffers; what waits
        in them grows with each write at once, the producer is paused exactly when it
        passes zero, and it falls below zero again once the peer has read it.
        """
        real = await _RealConnection().open(self)
        tcp = _compat.tcpUnderTLS(real.connection.transport)
        self.assertIsInstance(tcp, FileDescriptor, changed("Twisted", "tcpUnderTLS"))
        for name, kind in [("dataBuffer", bytes), ("offset", int), ("_tempDataLen", int), ("bufferSize", int)]:
            self.assertIsInstance(getattr(tcp, name, None), kind, changed("Twisted", "unsentBytes") + f": {name}")
        producer = _Producer()
        real.connection.transport.registerProducer(producer, True)
        self.addCleanup(lambda: real.connection.transport and real.connection.transport.unregisterProducer())
        self.assertIsNotNone(_compat.unsentBytes(real.connection), changed("Twisted", "unsentBytes"))
        self.assertLess(_compat.unsentBytes(real.connection), 0, changed("Twisted", "unsentBytes"))
        # One synchronous run of writes: the reactor sends nothing meanwhile.
        steps = []
        for _ in range(tcp.bufferSize // 4096 + 2):
            real.connection.transport.write(textFrame(b"x" * 4092))
            steps.append((_compat.unsentBytes(real.connection) > 0, producer.paused))
        self.assertEqual([waiting for waiting, _ in steps], [paused for _, paused in steps],
                         changed("Twisted", "unsentBytes") + ": bufferSize is not the pause threshold")
        self.assertTrue(steps[-1][1], changed("Twisted", "unsentBytes"))
        await waitFor(lambda: _compat.unsentBytes(real.connection) < 0, what="the buffers drained")

    def test_unknownTransport(self) -> None:
        """
        A transport that does not keep Twisted's buffers says nothing.
        """
        self.assertIsNone(_compat.unsentBytes(type("Connection", (), {"transport": StringTransport()})()))

    async def test_noDelayUnderTLS(self) -> None:
        """
        C{setTcpNoDelay} on the TLS transport reaches the TCP socket.
        """
        real = await _RealConnection().open(self)
        tcp = _compat.tcpUnderTLS(real.connection.transport)
        tcp.setTcpNoDelay(False)
        _compat.setNoDelay(real.connection.transport)
        self.assertTrue(tcp.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                        changed("Twisted", "setNoDelay") + ": ProtocolWrapper no longer forwards setTcpNoDelay")


class TwistedServiceTests(TestCase):
    """
    L{_compat.raiseListenErrors} and L{_compat.QuietClientService}.
    """

    timeout = 20

    def test_listenErrorRaised(self) -> None:
        """
        A port in use raises from C{privilegedStartService}.
        """
        port = listenTLS(self, Factory.forProtocol(Protocol))
        endpoint = tls.serverEndpoint(reactor, port, "127.0.0.1", certDir())
        service = _compat.raiseListenErrors(StreamServerEndpointService(endpoint, Factory.forProtocol(Protocol)))
        self.assertRaises(CannotListenError, service.privilegedStartService)

    async def test_retryLoggedThroughLog(self) -> None:
        """
        L{ClientService} logs its retries, below warning level, through its class's
        C{_log}: what L{_compat.QuietClientService} replaces.
        """
        events = []

        class Recording(ClientService):
            _log = Logger(observer=events.append)

        service = Recording(TCP4ClientEndpoint(reactor, "127.0.0.1", freePort()), Factory.forProtocol(Protocol),
                            retryPolicy=lambda attempt: 0.01)
        service.startService()
        self.addCleanup(service.stopService)
        await waitFor(lambda: events, what="a retry logged")
        retries = [event for event in events if "retry" in formatEvent(event).lower()]
        self.assertTrue(retries, changed("Twisted", "QuietClientService") + f": {[formatEvent(e) for e in events]}")
        self.assertIn(retries[0]["log_level"], (LogLevel.debug, LogLevel.info), changed("Twisted", "QuietClientService"))
        self.assertIsNot(_compat.QuietClientService._log, ClientService._log)


class ImportChecksTests(SynchronousTestCase):
    """
    What L{_compat} checks at import fails with a line naming the library and the fence.
    """

    def test_missingNameNamed(self) -> None:
        class Bare:
            pass

        self.patch(_compat, "_CLASS_LEVEL", (("Twisted", Bare, ("_raiseSynchronously",), "raiseListenErrors"),))
        error = self.assertRaises(_compat.LibraryChanged, _compat._checkLibraries)
        self.assertIn("Twisted", str(error))
        self.assertIn("wsqueue._compat.raiseListenErrors", str(error))
        self.assertIn("_raiseSynchronously", str(error))

    def test_currentLibrariesPass(self) -> None:
        _compat._checkLibraries()
