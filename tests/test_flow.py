"""
Tests for L{wsqueue.flow}: the one pause-then-refuse rule of the publisher and msgqueue.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.flow import FlowGate
from wsqueue.testing import RecordingSender


class RecordingListener:
    """
    A stage that records what its gate told it.
    """

    def __init__(self) -> None:
        self.heard: list[tuple] = []

    def flowPaused(self, level: int, senders: int) -> None:
        self.heard.append(("paused", level, senders))

    def flowRefusing(self, level: int, senders: int) -> None:
        self.heard.append(("refusing", level, senders))

    def flowReopened(self, level: int, senders: int, wasPaused: bool) -> None:
        self.heard.append(("reopened", level, senders, wasPaused))


class FlowGateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.listener = RecordingListener()
        self.gate = FlowGate(self.clock, 100, 5.0, self.listener, hysteresis=10, overshoot=20)
        self.sender = RecordingSender()
        self.gate.addSender(self.sender)

    def test_limits(self) -> None:
        """
        One formula for both stages: resume a C{limit // hysteresis} step below the
        bound (at least one), refuse past the bound plus the larger of the overshoot
        and a tenth of the bound.
        """
        self.assertEqual((self.gate.resumeAt, self.gate.hardLimit), (90, 120))
        self.assertEqual(FlowGate(self.clock, 10_000, 5.0, self.listener, hysteresis=2, overshoot=100).hardLimit, 11_000)
        tiny = FlowGate(self.clock, 3, 5.0, self.listener, hysteresis=10)
        self.assertEqual(tiny.resumeAt, 2)

    def test_pausesAtTheBound(self) -> None:
        """
        Below the bound nothing happens; at it every sender is paused, once, and the
        stage hears it.
        """
        self.gate.update(99)
        self.assertEqual((self.sender.calls, self.listener.heard), ([], []))
        self.gate.update(100)
        self.gate.update(101)
        self.assertEqual(self.sender.calls, ["pause"])
        self.assertEqual(self.listener.heard, [("paused", 100, 1)])
        self.assertTrue(self.gate.paused)
        self.assertFalse(self.gate.refuses(101))

    def test_hysteresis(self) -> None:
        """
        A pause ends only at C{resumeAt}, not one below the bound; the timer goes.
        """
        self.gate.update(100)
        self.gate.update(91)
        self.assertEqual(self.sender.calls, ["pause"])
        self.gate.update(90)
        self.assertEqual(self.sender.calls, ["pause", "resume"])
        self.assertEqual(self.listener.heard[-1], ("reopened", 90, 1, True))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pauseIsBounded(self) -> None:
        """
        After C{pauseLimit} seconds senders are read again and refused, until
        C{resumeAt}; reopening then resumes nobody (nobody is paused).
        """
        self.gate.update(100)
        self.clock.advance(4.9)
        self.assertEqual(self.sender.calls, ["pause"])
        self.clock.advance(0.1)
        self.assertEqual(self.sender.calls, ["pause", "resume"])
        self.assertEqual(self.listener.heard[-1], ("refusing", 100, 1))
        self.assertTrue(self.gate.refuses(0))
        late = RecordingSender()
        self.gate.addSender(late)
        self.assertEqual(late.calls, [])
        self.gate.update(91)
        self.assertTrue(self.gate.refuses(91))
        self.gate.update(90)
        self.assertFalse(self.gate.refuses(90))
        self.assertEqual(self.sender.calls, ["pause", "resume"])
        self.assertEqual(self.listener.heard[-1], ("reopened", 90, 2, False))

    def test_hardLimit(self) -> None:
        """
        Past the hard limit everything is refused, paused or not.
        """
        self.assertFalse(self.gate.refuses(119))
        self.assertTrue(self.gate.refuses(120))

    def test_lateSenderPaused(self) -> None:
        """
        A sender added while the gate is paused is paused at once; a removed one is
        left alone.
        """
        self.gate.update(100)
        late = RecordingSender()
        self.gate.addSender(late)
        self.gate.removeSender(self.sender)
        self.gate.update(0)
        self.assertEqual((late.calls, self.sender.calls), (["pause", "resume"], ["pause"]))

    def test_stop(self) -> None:
        """
        A stopped gate leaves no timer and changes nothing more; paused senders stay
        paused unless asked to resume.
        """
        self.gate.update(100)
        self.gate.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.gate.update(0)
        self.assertEqual(self.sender.calls, ["pause"])

    def test_stopResuming(self) -> None:
        """
        C{stop(resume=True)} reads paused senders again, and pauses nobody after.
        """
        self.gate.update(100)
        self.gate.stop(resume=True)
        self.gate.update(200)
        self.assertEqual(self.sender.calls, ["pause", "resume"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
