"""
The stage-to-stage link: what it logs while msgqueue cannot be reached, and how it
fails over between msgqueue daemons (#10, item 3).
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from wsqueue.link import LinkOwner

from .daemons import freePort
from .helpers import waitFor
from .standins import StandInQueue, startLink


class _Owner(LinkOwner):
    def linkReceived(self, link, payload: bytes, isBinary: bool) -> None:
        pass


class FailingLinkLogTests(TestCase):
    """
    (#8, item 12) A link that keeps failing logs its first failure once, not four
    lines per attempt forever (its own, L{ClientService}'s retry line, Autobahn's
    two), and says when it opens after failing.
    """

    timeout = 20

    def texts(self, events) -> list[str]:
        return [formatEvent(event) for event in events]

    async def test_unreachableLoggedOnce(self) -> None:
        """
        Five refused connections make one warning, and no retry or factory lines.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        link = startLink(self, freePort(), "/popmsg", _Owner(), retryPolicy=lambda attempt: 0.01)
        await waitFor(lambda: link.failedAttempts >= 5, what="5 failed attempts")
        texts = self.texts(events)
        self.assertEqual(len([t for t in texts if "cannot reach msgqueue" in t]), 1, texts)
        self.assertEqual([t for t in texts if "Scheduling retry" in t or "factory" in t.lower()], [])

    async def test_refusedHandshakeLoggedOnce(self) -> None:
        """
        Wrong credentials, refused again and again, make one critical line; only
        the link's own lines are logged per attempt (none from Autobahn).
        """
        queue = StandInQueue(self)
        port = queue.listen()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        link = startLink(self, port, "/popmsg", _Owner(), password="wrong", retryPolicy=lambda attempt: 0.01)
        await waitFor(lambda: link.failedAttempts >= 10, what="10 refused handshakes")
        clientSide = [event for event in events if "StageServerProtocol" not in event.get("log_namespace", "")
                      and "WebSocketServerProtocol" not in event.get("log_namespace", "")]
        texts = self.texts(clientSide)
        self.assertEqual(len([t for t in texts if "refused our credentials" in t]), 1, texts)
        self.assertEqual([t for t in texts if "autobahn" in str(t).lower() or "Scheduling retry" in t], [])
        self.assertEqual([e for e in clientSide if "autobahn" in e.get("log_namespace", "")], [])

    async def test_openAfterFailures(self) -> None:
        """
        Once msgqueue is back, the link says it opened and after how many failures.
        """
        port = freePort()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        link = startLink(self, port, "/popmsg", _Owner(), retryPolicy=lambda attempt: 0.02)
        await waitFor(lambda: link.failedAttempts >= 3, what="3 failed attempts")
        queue = StandInQueue(self)
        queue.listen(port)
        await waitFor(lambda: link.protocol is not None, what="the link to open")
        opened = [t for t in self.texts(events) if "open (after" in t]
        self.assertEqual(len(opened), 1, opened)
        self.assertEqual(link.failedAttempts, 0)


class FailoverTests(TestCase):
    """
    (#10, item 3) A link given several msgqueue daemons keeps one link, to the
    first it can reach, and moves to the next when that one is lost.
    """

    timeout = 20

    async def test_firstReachable(self) -> None:
        """
        A msgqueue that cannot be reached is passed over for the next one.
        """
        second = StandInQueue(self)
        port = second.listen()
        link = startLink(self, freePort(), "/popmsg", _Owner(), alternatives=[port])
        await waitFor(lambda: link.protocol is not None, what="the link to the second msgqueue")
        self.assertEqual(link.url, f"wss://localhost:{port}/popmsg")
        self.assertEqual(len(second.poppers), 1)

    async def test_lostMovesToNext(self) -> None:
        """
        A link that is lost opens next to the following msgqueue, round the list,
        even while the one it lost still accepts connections.
        """
        first, second = StandInQueue(self), StandInQueue(self)
        link = startLink(self, first.listen(), "/popmsg", _Owner(), alternatives=[second.listen()])
        await waitFor(lambda: link.protocol is not None and first.poppers, what="the link to the first")
        first.dropAll()
        await waitFor(lambda: second.poppers, what="the link to move to the second")
        await waitFor(lambda: link.protocol is not None, what="the link open again")
        self.assertEqual(link.url, f"wss://localhost:{second.port}/popmsg")
        second.dropAll()
        await waitFor(lambda: len(first.poppers) == 2, what="the link back on the first")
        self.assertEqual(len(second.poppers), 1)

    async def test_singleStaysPut(self) -> None:
        """
        With one msgqueue, a lost link goes back to it.
        """
        queue = StandInQueue(self)
        link = startLink(self, queue.listen(), "/popmsg", _Owner())
        await waitFor(lambda: link.protocol is not None, what="the link")
        queue.dropAll()
        await waitFor(lambda: len(queue.poppers) == 2, what="the link back")
        self.assertEqual(link.url, f"wss://localhost:{queue.port}/popmsg")
