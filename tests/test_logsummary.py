"""
Tests for L{wsqueue.logsummary}.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.logsummary import RepeatSummary


class RepeatSummaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        self.clock = Clock()
        self.summary = RepeatSummary(Logger(observer=self.events.append), self.clock, interval=10)

    def texts(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(event) for event in self.events]

    def test_firstLoggedRepeatsCounted(self) -> None:
        """
        The first event is logged at once; 999 repeats make one summary line.
        """
        for _ in range(1000):
            self.summary.emit("store failed: {error}", error="disk full")
        self.assertEqual(self.texts(), ["store failed: disk full"])
        self.clock.advance(10)
        self.assertEqual(
            self.texts(),
            ["store failed: disk full", "(repeated 999 more time(s) in the last 10 s) store failed: disk full"],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_distinctEventsEachLogged(self) -> None:
        """
        Different fields are different events, each logged at once.
        """
        self.assertTrue(self.summary.emit("refused: {reason}", reason="full"))
        self.assertTrue(self.summary.emit("refused: {reason}", reason="stopping"))
        self.assertFalse(self.summary.emit("refused: {reason}", reason="full"))
        self.assertEqual(self.texts(), ["refused: full", "refused: stopping"])

    def test_noRepeatsNoSummary(self) -> None:
        """
        A single event gets no summary line, and the next interval logs anew.
        """
        self.summary.emit("once")
        self.clock.advance(10)
        self.summary.emit("once")
        self.assertEqual(self.texts(), ["once", "once"])

    def test_flush(self) -> None:
        """
        L{RepeatSummary.flush} logs the count at once and cancels the timer.
        """
        self.summary.emit("x")
        self.summary.emit("x")
        self.summary.flush()
        self.assertEqual(self.texts(), ["x", "(repeated 1 more time(s) in the last 10 s) x"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
