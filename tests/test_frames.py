"""
Tests for L{wsqueue.frames}: the frames wsqueue builds itself must be exactly what
Autobahn would send.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.frames import textFrame


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
