# -*- test-case-name: tests.test_flow -*-
"""
Flow control for a stage that takes messages from many senders and holds them until
the next stage takes them: the publisher (its clients' messages, held for msgqueue)
and msgqueue (pushed entries, held for consumer groups).

Both follow one rule, kept here in one place (L{FlowGate}):

  - at the bound (C{limit}) every sender is paused: TCP flow control, nothing is read;
  - a pause lasts at most C{pauseLimit} seconds.  A paused connection cannot answer
    pings, so a longer pause would make the sender drop it and its clients would
    never hear why.  After that the senders are read again and what they send is
    refused (with an Error, by the stage) instead;
  - both end once the level is back down to L{FlowGate.resumeAt}, a step below the
    bound (hysteresis), so that a stage kept at its bound does not pause and resume,
    and log, once per message;
  - whatever the state, past L{FlowGate.hardLimit} everything is refused: what was
    already on its way when the pause began may overshoot the bound, by that much.

The stage reports its level (L{FlowGate.update}), asks whether to refuse
(L{FlowGate.refuses}), and says what each change means in its own words through a
L{FlowListener}.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Pausable(Protocol):
    """
    A sender the gate can stop and start reading from.
    """

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


class FlowListener(Protocol):
    """
    What the stage says (logs, or does besides) when its gate changes state.
    """

    def flowPaused(self, level: int, senders: int) -> None:
        """The bound was reached: C{senders} are paused from now on."""

    def flowRefusing(self, level: int, senders: int) -> None:
        """The pause lasted C{pauseLimit}: C{senders} are read again, and refused."""

    def flowReopened(self, level: int, senders: int, wasPaused: bool) -> None:
        """There is room again; if C{wasPaused}, C{senders} have been resumed."""


class FlowGate:
    """
    Pauses, then refuses, the senders of a stage while it holds too much (see the
    module docstring).

    @ivar limit: the level at which senders are paused.
    @ivar pauseLimit: the longest a pause lasts, in seconds.
    @ivar hysteresis: senders are resumed once C{limit // hysteresis} (at least one)
        of the bound is free again.
    @ivar overshoot: the least L{hardLimit} allows beyond the bound (at least a
        tenth of it): what a sender may have on its way when it is paused.
    @ivar paused: the senders are paused.
    @ivar refusing: the pause ran out: senders are read, and what they send refused.
    @ivar level: the level last reported (L{update}).
    """

    def __init__(
        self,
        clock: IReactorTime,
        limit: int,
        pauseLimit: float,
        listener: FlowListener,
        hysteresis: int = 10,
        overshoot: int = 1000,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.pauseLimit = pauseLimit
        self.listener = listener
        self.hysteresis = hysteresis
        self.overshoot = overshoot
        self.paused = False
        self.refusing = False
        self.level = 0
        self._stopped = False
        self._senders: set[Pausable] = set()
        self._timer: IDelayedCall | None = None

    @property
    def resumeAt(self) -> int:
        """
        The level at or below which a pause (or the refusals after it) ends.
        """
        return self.limit - max(1, self.limit // self.hysteresis)

    @property
    def hardLimit(self) -> int:
        """
        The level from which everything is refused, paused or not.
        """
        return self.limit + max(self.overshoot, self.limit // 10)

    def addSender(self, sender: Pausable) -> None:
        """
        Watch C{sender}: paused at once if the gate is.
        """
        self._senders.add(sender)
        if self.paused:
            sender.pauseProducing()

    def removeSender(self, sender: Pausable) -> None:
        self._senders.discard(sender)

    def refuses(self, level: int) -> bool:
        """
        Whether a message arriving at C{level} must be refused.
        """
        return self.refusing or level >= self.hardLimit

    def update(self, level: int) -> None:
        """
        The stage now holds C{level}: pause at the bound, reopen with room.
        """
        self.level = level
        if self._stopped:
            return
        if not (self.paused or self.refusing):
            if level >= self.limit:
                self._pause(level)
        elif level <= self.resumeAt:
            self._reopen(level)

    def stop(self, resume: bool = False) -> None:
        """
        The stage is stopping (it refuses everything itself from now on): change
        nothing more and leave no timer behind.  With C{resume}, paused senders are
        read again, so that they hear the stage's refusals instead of waiting.
        """
        self._stopped = True
        self._cancelTimer()
        if resume and self.paused:
            self.paused = False
            self._resumeAll()

    def _pause(self, level: int) -> None:
        self.paused = True
        for sender in list(self._senders):
            sender.pauseProducing()
        self._timer = self.clock.callLater(self.pauseLimit, self._pauseExpired)
        self.listener.flowPaused(level, len(self._senders))

    def _pauseExpired(self) -> None:
        self._timer = None
        self.paused = False
        self.refusing = True
        self._resumeAll()
        self.listener.flowRefusing(self.level, len(self._senders))

    def _reopen(self, level: int) -> None:
        wasPaused = self.paused
        self.paused = self.refusing = False
        self._cancelTimer()
        if wasPaused:
            self._resumeAll()
        self.listener.flowReopened(level, len(self._senders), wasPaused)

    def _resumeAll(self) -> None:
        for sender in list(self._senders):
            sender.resumeProducing()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
