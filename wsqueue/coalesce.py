# -*- test-case-name: tests.test_coalesce -*-
"""
One delayed call that many requests share.

The publisher flushes what a reactor turn gathered in one go, the subscriber
acknowledges many messages at once, and the broker runs one delivery pass for many
pushes and acknowledgements: each wants "run this soon, once, however often it was
asked".  L{CoalescedCall} is that, in one place: requests made while a call is
pending join it, and a request for sooner brings it forward.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class CoalescedCall:
    """
    Calls C{f} once after the soonest of the delays asked for since it last ran.

    @ivar pending: whether a call is scheduled.
    """

    __slots__ = ("_call", "_clock", "_delay", "_f")

    def __init__(self, clock: IReactorTime, f: Callable[[], object]) -> None:
        self._clock = clock
        self._f = f
        self._call: IDelayedCall | None = None
        self._delay = 0.0

    @property
    def pending(self) -> bool:
        return self._call is not None

    def schedule(self, delay: float = 0.0) -> None:
        """
        Make sure C{f} runs within C{delay} seconds: join the pending call, or bring
        it forward when it would run later than that.
        """
        call = self._call
        if call is not None:
            # The common case costs one comparison: as soon or sooner is already asked.
            if delay >= self._delay or call.getTime() <= self._clock.seconds() + delay:
                return
            call.cancel()
        self._delay = delay
        self._call = self._clock.callLater(delay, self._run)

    def cancel(self) -> None:
        """
        Forget the pending call, if any.
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _run(self) -> None:
        self._call = None
        self._f()
