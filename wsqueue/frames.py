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
L{readClientFrames} reads the common case, whole single-frame messages, and stops
at anything else, which Autobahn then handles exactly as it always does.
"""

from __future__ import annotations

_TEXT_FINAL = 0x81
"""FIN bit set, opcode 1 (text)."""


def textFrame(payload: bytes) -> bytes:
    """
    One complete, unmasked text frame carrying C{payload} (UTF-8 text), as a
    server sends it to a client.
    """
    length = len(payload)
    if length < 126:
        header = bytes((_TEXT_FINAL, length))
    elif length < 65536:
        header = bytes((_TEXT_FINAL, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((_TEXT_FINAL, 127)) + length.to_bytes(8, "big")
    return header + payload


_FINAL_TEXT = 0x81
_FINAL_BINARY = 0x82
_MASKED = 0x80


def unmask(masked: bytes, key: bytes) -> bytes:
    """
    The payload of a client's frame: C{masked} XORed with the 4-byte masking key
    repeated (RFC 6455, section 5.3), as one big-integer operation rather than a
    loop or a native masker object per frame.
    """
    length = len(masked)
    keys = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(keys, "little")).to_bytes(length, "little")


def readClientFrames(data: bytes, limit: int) -> tuple[list[tuple[int, bytes, bool]], int, int]:
    """
    Read the whole messages at the start of C{data} that a client sent as single,
    masked text or binary frames (almost all of them): C{(frames, stop, need)}.

    C{frames} holds C{(offset, payload, isBinary)} for each, unmasked and with text
    checked to be UTF-8.  Reading stops at C{stop}: with C{need} > 0 there, a frame of
    C{need} bytes has not fully arrived yet; with C{need} == 0, the frame there is one
    this reader leaves to Autobahn (control frames, fragments, anything over
    C{limit} bytes (0: none) or breaking the protocol), which handles it as always.
    """
    frames: list[tuple[int, bytes, bool]] = []
    position, end = 0, len(data)
    while position < end:
        if end - position < 2:
            return frames, position, 2
        first, second = data[position], data[position + 1]
        if (first != _FINAL_TEXT and first != _FINAL_BINARY) or second < _MASKED:
            return frames, position, 0
        length = second & 0x7F
        if length < 126:
            header = 6
        elif length == 126:
            header = 8
            if end - position < header:
                return frames, position, header
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            if length < 126:
                return frames, position, 0
        else:
            header = 14
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
        payload = unmask(data[start:stop], data[start - 4 : start])
        isBinary = first == _FINAL_BINARY
        if not isBinary and not payload.isascii():
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return frames, position, 0
        frames.append((position, payload, isBinary))
        position = stop
    return frames, position, 0
