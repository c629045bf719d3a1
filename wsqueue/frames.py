# -*- test-case-name: tests.test_frames -*-
"""
WebSocket data frames (RFC 6455, section 5.2) that wsqueue builds itself on its
hot path, instead of going through Autobahn once per message.

A subscriber's fan-out writes hundreds of small messages to each client per batch
from msgqueue.  Framing each one with Autobahn costs a method chain, a debug-log
call and a TLS write per message per client; building the frames here lets each
client's share of a batch go out in one write, and a topic's frames be joined once
for all its clients.  Only what a server sends is built here: unmasked, unfragmented
text frames, on connections without a compression extension.
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
