"""
Tests for L{wsqueue.coalesce}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.coalesce import CoalescedCall


class CoalescedCallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.runs: list[float] = []
        self.call = CoalescedCall(self.clock, lambda: self.runs.append(self.clock.seconds()))

    def test_requestsJoin(self) -> None:
        """
        Many requests before it runs make one call.
        """
        for _ in range(100):
            self.call.schedule()
        self.assertTrue(self.call.pending)
        self.clock.advance(0)
        self.assertEqual((self.runs, self.call.pending), ([0], False))

    def test_soonerBringsForward(self) -> None:
        """
        A request for sooner than the pending call brings it forward; a request for
        later joins it.
        """
        self.call.schedule(0.02)
        self.clock.advance(0.005)
        self.call.schedule(0.05)
        self.call.schedule(0)
        self.clock.advance(0)
        self.assertEqual(self.runs, [0.005])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notBroughtForwardWhenDueAnyway(self) -> None:
        """
        A request for sooner joins a pending call that is due by then anyway.
        """
        self.call.schedule(0.02)
        self.clock.advance(0.02)
        self.assertEqual(self.runs, [0.02])
        self.call.schedule(0.02)
        self.clock.advance(0.015)
        self.call.schedule(0.01)
        self.clock.advance(0.005)
        self.assertEqual(self.runs, [0.02, 0.04])

    def test_runsAgainAfterRunning(self) -> None:
        """
        A request after the call ran schedules a new one.
        """
        self.call.schedule()
        self.clock.advance(0)
        self.call.schedule(1)
        self.clock.advance(1)
        self.assertEqual(self.runs, [0, 1])

    def test_cancel(self) -> None:
        """
        A cancelled call does not run and leaves nothing scheduled.
        """
        self.call.schedule(1)
        self.call.cancel()
        self.call.cancel()
        self.clock.advance(2)
        self.assertEqual((self.runs, self.clock.getDelayedCalls(), self.call.pending), ([], [], False))
