# -*- test-case-name: tests.test_logsummary -*-
"""
Log a repeated event once, then a count per interval, instead of once per event.

A store that cannot write, or a msgqueue that refuses every message, can fail the
same way thousands of times a second; one line per failure buried the first cause
under megabytes of log (19 MB in 12 s, seen in outside testing).  A
L{RepeatSummary} logs the first occurrence of each distinct event at once, counts
the repeats that follow, and logs how many there were once per C{interval}, and
once more when it is told the condition ended (L{RepeatSummary.flush}).
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

SUMMARY_INTERVAL = 10.0
"""Seconds between two summary lines of the same repeated event."""


class RepeatSummary:
    """
    Rate-limits one kind of log line.

    Events are keyed by their formatted text (the C{key} argument of L{emit}, by
    default the format string with its fields), so two different reasons are both
    logged at once, and each counts its own repeats.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        interval: float = SUMMARY_INTERVAL,
        level: LogLevel = LogLevel.error,
    ) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self.level = level
        self._repeats: dict[str, tuple[int, tuple[LogLevel, str, dict]]] = {}
        self._call: IDelayedCall | None = None

    def emit(self, format: str, key: str | None = None, level: LogLevel | None = None, **fields: object) -> bool:
        """
        Log C{format} with C{fields} now (at C{level}, else the summary's level) if
        this event has not happened within the current interval, else count it;
        say whether it was logged now.
        """
        if key is None:
            key = format + repr(sorted(fields.items()))
        level = self.level if level is None else level
        if key in self._repeats:
            count, kept = self._repeats[key]
            self._repeats[key] = (count + 1, kept)
            return False
        self.log.emit(level, format, **fields)
        self._repeats[key] = (0, (level, format, fields))
        if self._call is None:
            self._call = self.clock.callLater(self.interval, self._summarise)
        return True

    def _summarise(self) -> None:
        self._call = None
        repeated = {key: value for key, value in self._repeats.items() if value[0]}
        self._repeats = {}
        # The next event after this starts a new interval and is logged at once, so
        # a reader sees the condition still lasts.
        for count, (level, fmt, fields) in repeated.values():
            self._logRepeats(count, level, fmt, fields)

    def _logRepeats(self, count: int, level: LogLevel, fmt: str, fields: dict) -> None:
        self.log.emit(
            level,
            "(repeated {repeats} more time(s) in the last {interval} s) " + fmt,
            repeats=count,
            interval=self.interval,
            **fields,
        )

    def flush(self) -> None:
        """
        Log what is counted now and start afresh (the condition is over).
        """
        if self._call is not None:
            self._call.cancel()
        self._summarise()

