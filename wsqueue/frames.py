# -*- test-case-name: tests.test_frames -*-
"""
WebSocket data frames (RFC 6455, section 5.2) that wsqueue builds and reads itself
on its hot paths, instead of going through Autobahn once per message.

A subscriber's fan-out writes hundreds of small messages to each client per batch
from msgqueue.  Framing each one with Autobahn costs a method chain, a debug-log
call and a TLS write per message per client; building the frames here lets each
client's share of a batch go out in one write, and a topic's frames be joined once
for all its clients.  Only what a server sends is built here: unmasked, unfragmented
text frames, on connections without a compression extension.

Reading is the mirror image: a publisher's clients send many small frames per TCP
read, and Autobahn spends far more on each (a masker object, a slice of its whole
buffer, event futures, debug-log arguments) than on the message itself.
L{readFrames} reads the common case, whole single-frame messages, and stops at
anything else, which Autobahn then handles exactly as it always does; L{WholeFrames}
puts both into a protocol.  Links (clients) mask what they send, as they must.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from autobahn.websocket.xormasker import create_xor_masker

from wsqueue import _compat

if TYPE_CHECKING:
    from autobahn.twisted.websocket import WebSocketAdapterProtocol
    from autobahn.websocket.protocol import WebSocketProtocol
    from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport

    class IConnectionTransport(ITCPTransport, IPushProducer, IConsumer):
        """
        For the type checker only: what the transport of a wsqueue connection (TCP,
        or TLS over TCP) provides beyond L{ITransport}: flow control in both
        directions and C{abortConnection}.
        """

    # Autobahn's own WebSocketServerProtocol and WebSocketClientProtocol combine the
    # same two bases, whose annotations of peer and _transport_details disagree.
    class AutobahnConnection(WebSocketAdapterProtocol, WebSocketProtocol):  # type: ignore[misc]
        """
        For the type checker only: the Autobahn protocol that the mixins L{WholeFrames}
        and L{wsqueue.server.PausableReading} are listed before among the bases of a
        connection class, so that they may use its attributes and C{super()}.  At run
        time they derive from C{object}.
        """

        transport: IConnectionTransport | None
        # A protocol option that Autobahn copies from the factory onto the protocol.
        maxMessagePayloadSize: int

else:
    AutobahnConnection = object

_FINAL_TEXT = 0x81
"""FIN bit set, opcode 1 (text)."""
_FINAL_BINARY = 0x82
_MASKED = 0x80


def _header(length: int, maskBit: int) -> bytes:
    # A final text frame's first two bytes and extended payload length (section 5.2).
    if length < 126:
        return bytes((_FINAL_TEXT, maskBit | length))
    if length < 65536:
        return bytes((_FINAL_TEXT, maskBit | 126)) + length.to_bytes(2, "big")
    return bytes((_FINAL_TEXT, maskBit | 127)) + length.to_bytes(8, "big")


def textFrame(payload: bytes) -> bytes:
    """
    One complete, unmasked text frame carrying C{payload} (UTF-8 text), as a
    server sends it to a client.
    """
    return _header(len(payload), 0) + payload


SMALL_PAYLOAD = 1536
"""Up to this size one big-integer XOR unmasks faster than setting up Autobahn's
native masker; above it the native masker wins, by far for large batches."""


def unmask(masked: bytes, key: bytes) -> bytes:
    """
    The payload of a client's frame: C{masked} XORed with the 4-byte masking key
    repeated (RFC 6455, section 5.3).
    """
    length = len(masked)
    if length > SMALL_PAYLOAD:
        return create_xor_masker(key, length).process(masked)
    keys = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(keys, "little")).to_bytes(length, "little")


def maskedTextFrame(payload: bytes) -> bytes:
    """
    One complete text frame as a client sends it: masked with a fresh key from the
    operating system's random source, as RFC 6455 (section 5.3) requires.
    """
    key = os.urandom(4)
    return _header(len(payload), _MASKED) + key + unmask(payload, key)


def readFrames(data: bytes, limit: int, masked: bool) -> tuple[list[tuple[int, bytes, bool]], int, int]:
    """
    Read the whole messages at the start of C{data} that came as single text or
    binary frames (almost all of them): C{(frames, stop, need)}.  Frames from a
    client are C{masked}, frames from a server are not; one that is the other way
    round breaks the protocol.

    C{frames} holds C{(offset, payload, isBinary)} for each, unmasked and with text
    checked to be UTF-8.  Reading stops at C{stop}: with C{need} > 0 there, a frame of
    C{need} bytes has not fully arrived yet; with C{need} == 0, the frame there is one
    this reader leaves to Autobahn (control frames, fragments, anything over
    C{limit} bytes (0: none) or breaking the protocol), which handles it as always.
    """
    frames: list[tuple[int, bytes, bool]] = []
    position, end = 0, len(data)
    keyLength = 4 if masked else 0
    while position < end:
        if end - position < 2:
            return frames, position, 2
        first, second = data[position], data[position + 1]
        if (first != _FINAL_TEXT and first != _FINAL_BINARY) or (second >= _MASKED) != masked:
            return frames, position, 0
        length = second & 0x7F
        if length < 126:
            header = 2 + keyLength
        elif length == 126:
            header = 4 + keyLength
            if end - position < header:
                return frames, position, header
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            if length < 126:
                return frames, position, 0
        else:
            header = 10 + keyLength
            if end - position < header:
                return frames, position, header
            length = int.from_bytes(data[position + 2 : position + 10], "big")
            if length < 65536 or length >> 63:
                return frames, position, 0
        if limit and length > limit:
            return frames, position, 0
        start = position + header
        stop = start + length
        if stop > end:
            return frames, position, header + length
        payload = unmask(data[start:stop], data[start - 4 : start]) if masked else data[start:stop]
        isBinary = first == _FINAL_BINARY
        if not isBinary and not payload.isascii():
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return frames, position, 0
        frames.append((position, payload, isBinary))
        position = stop
    return frames, position, 0


class WholeFrames(AutobahnConnection):
    """
    For an Autobahn WebSocket protocol (listed before it among the bases): reads
    whole single-frame messages with L{readFrames} and writes whole frames itself,
    leaving everything else (handshakes, control frames, fragments, errors,
    compression) to Autobahn.

    @cvar peerMasks: frames from the peer are masked, that is, this is a server.
    """

    peerMasks: bool = True
    # The start of a frame that has not fully arrived waits here.
    _heldData: bytearray | None = None
    _heldNeed: int = 0

    def dataReceived(self, data: bytes) -> None:
        if self._heldData is not None:
            self._heldData += data
            if len(self._heldData) < self._heldNeed:
                return
            data, self._heldData = bytes(self._heldData), None
        if not self._readsFramesItself():
            super().dataReceived(data)
            return
        messages, stop, need = readFrames(data, self.maxMessagePayloadSize, self.peerMasks)
        for start, payload, isBinary in messages:
            if self.state != self.STATE_OPEN:
                # A handler closed the connection: the rest is Autobahn's to handle.
                super().dataReceived(data[start:])
                return
            self.onMessage(payload, isBinary)
        if stop == len(data):
            return
        if need and self.state == self.STATE_OPEN:
            self._heldData, self._heldNeed = bytearray(data[stop:]), need
        else:
            super().dataReceived(data[stop:])

    # Only between messages, as Autobahn would see it, and on plain connections.
    # Autobahn's private state is read in wsqueue._compat (bound here, as cheap as a
    # method of this class).
    _readsFramesItself = _compat.autobahnBetweenMessages

    def sendText(self, payload: bytes) -> None:
        """
        Send one text message on an open connection: framed here on a plain
        connection (masked from a client), by Autobahn when a compression extension
        was negotiated.
        """
        # An inline read of Autobahn's state (wsqueue._compat.AUTOBAHN_FRAME_STATE).
        if self._perMessageCompress is not None:
            self.sendMessage(payload)
        else:
            self.sendFrames(textFrame(payload) if self.peerMasks else maskedTextFrame(payload))

    sendFrames = _compat.sendDataWithoutLog
    """
    Write complete frames on an open connection that has no compression extension
    (see L{wsqueue._compat.sendDataWithoutLog}).
    """
