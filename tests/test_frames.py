"""
Tests for L{wsqueue.frames}: the frames wsqueue builds itself must be exactly what
Autobahn would send, and a connection that reads frames itself must behave exactly
as Autobahn alone does, whatever arrives and however it is cut.
"""

from __future__ import annotations

import base64
import hashlib
import random

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, WebSocketServerFactory
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.frames import SMALL_PAYLOAD, WholeFrames, maskedTextFrame, readFrames, textFrame, unmask
from wsqueue.server import EndpointHandler, Limits, StageServerFactory, StageServerProtocol

from .helpers import AcceptingAuthenticator, MemoryServerTransport, upgradeRequest


class TextFrameTests(SynchronousTestCase):
    """
    Tests for L{textFrame}.
    """

    def test_sameAsAutobahn(self) -> None:
        """
        For every length encoding (7-bit, 16-bit, 64-bit) and at their edges, the
        frame equals Autobahn's prepared text message.
        """
        factory = WebSocketServerFactory()
        for length in (0, 1, 125, 126, 127, 65535, 65536, 70000):
            payload = b"x" * length
            self.assertEqual(textFrame(payload), factory.prepareMessage(payload).payloadHybi, length)


def clientFrame(opcode: int, payload: bytes, key: bytes = b"\x01\x02\x03\x04", final: bool = True, masked: bool = True) -> bytes:
    """
    A frame as a client sends it (RFC 6455, section 5.2).
    """
    length = len(payload)
    if length < 126:
        lengthBytes = bytes((0x80 * masked | length,))
    elif length < 65536:
        lengthBytes = bytes((0x80 * masked | 126,)) + length.to_bytes(2, "big")
    else:
        lengthBytes = bytes((0x80 * masked | 127,)) + length.to_bytes(8, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if masked else payload
    return bytes((0x80 * final | opcode,)) + lengthBytes + (key if masked else b"") + body


def feedInPieces(protocol, stream: bytes, seed: int, sizes: list[int]) -> None:
    """
    Hand C{stream} to C{protocol} in pieces of sizes drawn (by C{seed}) from
    C{sizes} and the whole stream, as TCP reads might cut it.
    """
    cuts = random.Random(seed)
    position = 0
    while position < len(stream):
        size = cuts.choice([*sizes, len(stream)])
        protocol.dataReceived(stream[position : position + size])
        position += size


class ReadClientFramesTests(SynchronousTestCase):
    """
    Tests for L{readFrames} and L{maskedTextFrame} on their own.
    """

    def test_wholeFrames(self) -> None:
        """
        Text and binary frames are unmasked, with where each began.
        """
        first = clientFrame(1, "h\u00e9llo".encode())
        second = clientFrame(2, b"\x00\xff" * 100, key=b"\xaa\xbb\xcc\xdd")
        frames, stop, need = readFrames(first + second, 1000, True)
        self.assertEqual(frames, [(0, "h\u00e9llo".encode(), False), (len(first), b"\x00\xff" * 100, True)])
        self.assertEqual((stop, need), (len(first) + len(second), 0))

    def test_incomplete(self) -> None:
        """
        A frame cut anywhere (in its header too) stops reading there and says how
        many bytes it needs, as far as the header tells.
        """
        whole = clientFrame(1, b"x" * 300)
        for cut, need in [(1, 2), (3, 8), (7, 8), (8, len(whole)), (len(whole) - 1, len(whole))]:
            self.assertEqual(readFrames(b"a" + whole[:cut], 1000, True)[1:], (0, 0), "a is not a frame")
            self.assertEqual(readFrames(whole[:cut], 1000, True), ([], 0, need), cut)

    def test_leftToAutobahn(self) -> None:
        """
        Reading stops with need 0 at frames that are not a whole masked data message
        within the limit, or that break the protocol.
        """
        ok = clientFrame(1, b"ok")
        for frame in [
            clientFrame(9, b"ping"),
            clientFrame(1, b"part", final=False),
            clientFrame(0, b"rest"),
            clientFrame(1, b"x" * 101),
            clientFrame(1, b"unmasked", masked=False),
            clientFrame(1, b"\xc3\x28"),
            clientFrame(1, b"a" * 10)[:1] + bytes((0x80 | 126, 0, 10)) + clientFrame(1, b"a" * 10)[2:],
            bytes((0x81 | 0x40,)) + clientFrame(1, b"rsv")[1:],
        ]:
            self.assertEqual(readFrames(ok + frame + ok, 100, True), ([(0, b"ok", False)], len(ok), 0), frame)

    def test_serverFrames(self) -> None:
        """
        Unmasked frames are a server's: read when asked for them, left to Autobahn
        when masked ones are expected, and the other way round.
        """
        stream = textFrame(b"one") + textFrame("\u00e9".encode() * 100)
        self.assertEqual(readFrames(stream, 1000, False),
                         ([(0, b"one", False), (5, "\u00e9".encode() * 100, False)], len(stream), 0))
        self.assertEqual(readFrames(stream, 1000, True), ([], 0, 0))
        self.assertEqual(readFrames(clientFrame(1, b"x"), 1000, False), ([], 0, 0))

    def test_maskedTextFrame(self) -> None:
        """
        A client's frame reads back as its text, and each has a fresh masking key.
        """
        for length in (0, 125, 126, 65535, 65536):
            payload = b"m" * length
            frame = maskedTextFrame(payload)
            self.assertEqual(readFrames(frame, 0, True), ([(0, payload, False)], len(frame), 0))
        keys = {maskedTextFrame(b"same")[2:6] for _ in range(20)}
        self.assertGreater(len(keys), 15)

    def test_unmask(self) -> None:
        """
        Unmasking repeats the key over any length, zero included.
        """
        for length in (0, 1, 3, 4, 5, 1000, SMALL_PAYLOAD, SMALL_PAYLOAD + 1, 70_000):
            payload = bytes(range(256)) * 300
            self.assertEqual(unmask(clientFrame(2, payload[:length])[-length:] if length else b"", b"\x01\x02\x03\x04"),
                             payload[:length])


class _Recording(EndpointHandler):
    def received(self, payload: bytes, isBinary: bool) -> None:
        self.connection.factory.received.append((payload, isBinary))
        if payload == b"close":
            self.connection.sendClose(1000)


class _AutobahnOnly(StageServerProtocol):
    def _readsFramesItself(self) -> bool:
        return False


class SameAsAutobahnTests(SynchronousTestCase):
    """
    A server connection reading frames itself behaves exactly as Autobahn alone:
    same messages, same replies, same close, however the bytes are cut.
    """

    def connection(self, protocolClass):
        factory = StageServerFactory({"/x": _Recording}, AcceptingAuthenticator(), Limits(maxMessageSize=70_000), MemoryReactorClock())
        factory.protocol = protocolClass
        factory.received = []
        # No timers: Autobahn runs them on the global reactor, not this test's clock.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0, autoPingTimeout=0)
        factory.serverConnectionDropTimeout = 0
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        transport = MemoryServerTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(upgradeRequest(80, "/x"))
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        transport.clear()
        return protocol, transport, factory.received

    def assertSame(self, stream: bytes, seed: int) -> None:
        results = []
        for protocolClass in (StageServerProtocol, _AutobahnOnly):
            protocol, transport, received = self.connection(protocolClass)
            feedInPieces(protocol, stream, seed, [1, 2, 7, 100, 1000, 20_000])
            results.append((received, transport.value(), protocol.state))
        self.assertEqual(results[0], results[1], f"seed {seed}")

    def randomStream(self, rng: random.Random, count: int) -> bytes:
        parts = []
        for _ in range(count):
            key = rng.randbytes(4)
            kind = rng.random()
            length = rng.choice([0, 1, 125, 126, 300, 65535, 65536])
            if kind < 0.6:
                text = "".join(rng.choice("ab\u00e9\u20ac\U0001f600") for _ in range(length // 4))
                parts.append(clientFrame(1, text.encode(), key))
            elif kind < 0.8:
                parts.append(clientFrame(2, rng.randbytes(length), key))
            elif kind < 0.9:
                parts.append(clientFrame(9, rng.randbytes(rng.randrange(126)), key))
            else:
                payload = rng.randbytes(length)
                parts += [clientFrame(2, payload[:10], key, final=False), clientFrame(9, b"p", key),
                          clientFrame(0, payload[10:], key)]
        return b"".join(parts)

    def test_readsWholeFramesItself(self) -> None:
        """
        Whole data frames, even cut across reads, never reach Autobahn's frame parser;
        a ping does.
        """
        protocol, _, received = self.connection(StageServerProtocol)
        parsed = []
        protocol.processData = lambda: parsed.append(protocol.data) or False
        stream = clientFrame(1, b"one") + clientFrame(2, b"two" * 100) + clientFrame(1, b"three")
        protocol.dataReceived(stream[:5])
        protocol.dataReceived(stream[5:20])
        protocol.dataReceived(stream[20:])
        self.assertEqual((received, parsed), ([(b"one", False), (b"two" * 100, True), (b"three", False)], []))
        protocol.dataReceived(clientFrame(9, b"ping"))
        self.assertEqual(len(parsed), 1)

    def test_validStreams(self) -> None:
        """
        Text, binary, pings and fragmented messages of every length encoding.
        """
        for seed in range(30):
            self.assertSame(self.randomStream(random.Random(seed), 30), seed)

    def test_faultsAndClose(self) -> None:
        """
        Invalid UTF-8 (1007), an oversized frame (1009), an unmasked frame, and a
        handler that closes mid-stream end the same way.
        """
        rng = random.Random(1)
        streams = [clientFrame(1, b"ok") * 3, self.randomStream(rng, 5)]
        for bad in [clientFrame(1, b"\xc3\x28"), clientFrame(2, b"x" * 70_001), clientFrame(1, b"u", masked=False),
                    clientFrame(1, b"close")]:
            for good in streams:
                for seed in range(5):
                    self.assertSame(good + bad + good, seed)


class _RecordingClient(WholeFrames, WebSocketClientProtocol):
    peerMasks = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append((payload, isBinary))
        if payload == b"close":
            self.sendClose(1000)


class _AutobahnOnlyClient(_RecordingClient):
    def _readsFramesItself(self) -> bool:
        return False


class ClientSameAsAutobahnTests(SynchronousTestCase):
    """
    A client connection (a stage's link) reading a server's frames itself behaves
    exactly as Autobahn alone, and Autobahn reads the frames it sends.
    """

    def connection(self, protocolClass):
        factory = WebSocketClientFactory("wss://localhost/x")
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0,
                                   autoPingTimeout=0, maxMessagePayloadSize=70_000, maxFramePayloadSize=70_000)
        factory.protocol = protocolClass
        factory.received = []
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 443))
        transport = MemoryServerTransport()
        protocol.makeConnection(transport)
        request = transport.value().decode()
        key = request.split("Sec-WebSocket-Key: ")[1].split("\r\n")[0]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        protocol.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        transport.clear()
        return protocol, transport, factory.received

    def serverFrame(self, opcode: int, payload: bytes, final: bool = True) -> bytes:
        return clientFrame(opcode, payload, final=final, masked=False)

    def test_sameAsAutobahn(self) -> None:
        """
        Text, binary, pings, fragments, a frame over the limit, invalid UTF-8, a masked
        frame (not allowed from a server) and a close from the handler, cut at random.
        """
        rng = random.Random(7)
        parts = []
        for _ in range(40):
            length = rng.choice([0, 1, 125, 126, 300, 65535, 65536])
            kind = rng.random()
            if kind < 0.6:
                parts.append(self.serverFrame(1, ("\u00e9" * (length // 2)).encode()))
            elif kind < 0.8:
                parts.append(self.serverFrame(2, rng.randbytes(length)))
            elif kind < 0.9:
                parts.append(self.serverFrame(9, b"ping"))
            else:
                parts += [self.serverFrame(1, b"frag", final=False), self.serverFrame(0, b"ment")]
        good = b"".join(parts)
        streams = [good]
        for bad in [self.serverFrame(1, b"\xc3\x28"), self.serverFrame(2, b"x" * 70_001), clientFrame(1, b"masked"),
                    self.serverFrame(1, b"close")]:
            streams.append(good[:5000] + bad + self.serverFrame(1, b"after"))
        for number, stream in enumerate(streams):
            for seed in range(4):
                results = []
                for protocolClass in (_RecordingClient, _AutobahnOnlyClient):
                    protocol, transport, received = self.connection(protocolClass)
                    feedInPieces(protocol, stream, seed, [1, 3, 100, 5000, 70_000])
                    # Pongs and close frames from a client are masked with random keys: compare their kind.
                    results.append((received, protocol.state, transport.value()[:1]))
                self.assertEqual(results[0], results[1], f"stream {number}, seed {seed}")

    def test_readsWholeFramesItself(self) -> None:
        """
        A server's whole data frames never reach Autobahn's frame parser.
        """
        protocol, _, received = self.connection(_RecordingClient)
        parsed = []
        protocol.processData = lambda: parsed.append(protocol.data) or False
        stream = self.serverFrame(1, b"one") + self.serverFrame(2, b"two" * 100)
        protocol.dataReceived(stream[:3])
        protocol.dataReceived(stream[3:])
        self.assertEqual((received, parsed), ([(b"one", False), (b"two" * 100, True)], []))

    def test_autobahnReadsWhatLinksSend(self) -> None:
        """
        Autobahn, as a server, reads the masked frames a link sends.
        """
        protocol, _, received = SameAsAutobahnTests("test_validStreams").connection(_AutobahnOnly)
        payloads = [b"", b"a" * 125, "\u00e9".encode() * 200, b"z" * 65536]
        protocol.dataReceived(b"".join(maskedTextFrame(payload) for payload in payloads))
        self.assertEqual(received, [(payload, False) for payload in payloads])
