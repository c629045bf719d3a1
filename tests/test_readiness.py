"""
C{--ready-file}: a daemon tells whoever started it when it listens, when its links
open and close, and when it is ready.
"""

from __future__ import annotations

import json
import os
import signal

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsqueue.readiness import ReadyFile

from .daemons import startDaemon


def readEvents(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class ReadyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.ready = ReadyFile(self.path)
        self.addCleanup(self.ready.close)

    def test_readyOnceEverythingIsUp(self) -> None:
        """
        C{ready} comes once every expected listener listens and every expected link
        has opened once, after their own events, and only once.
        """
        self.ready.expectListener()
        self.ready.expectLink("wss://q/pushmsg")
        self.ready.listening("publisher", "127.0.0.1", 8081)
        self.assertFalse(self.ready.isReady)
        self.ready.linkOpened("wss://q/pushmsg")
        self.ready.linkClosed("wss://q/pushmsg")
        self.ready.linkOpened("wss://q/pushmsg")
        self.assertEqual([event["event"] for event in readEvents(self.path)],
                         ["listening", "link-open", "ready", "link-closed", "link-open"])
        self.assertEqual(readEvents(self.path)[0], {"event": "listening", "stage": "publisher",
                                                    "host": "127.0.0.1", "port": 8081})

    def test_linkToAnyOfSeveral(self) -> None:
        """
        (#10) A link that may go to any of several msgqueue daemons counts as up
        once it opened to one of them; a Redis store must be open too.
        """
        self.ready.expectLink("wss://mq1/popmsg", "wss://mq2/popmsg")
        self.ready.expectLink("wss://mq1/pushmsg", "wss://mq2/pushmsg")
        self.ready.expectStore()
        self.ready.linkOpened("wss://mq2/popmsg")
        self.ready.linkOpened("wss://mq2/popmsg")
        self.assertFalse(self.ready.isReady)
        self.ready.linkOpened("wss://mq1/pushmsg")
        self.assertFalse(self.ready.isReady)
        self.ready.storeOpened("redis://r:6379/0")
        self.assertEqual(readEvents(self.path)[-2:], [{"event": "store-open", "store": "redis://r:6379/0"},
                                                     {"event": "ready"}])

    def test_listenerKinds(self) -> None:
        """
        (#9, item 8) A TLS listener on TCP is reported as before (host and port); one
        without TLS adds C{"tls": false}; a UNIX socket gives its path instead of a
        host and port, anything else its address.  Each counts towards C{ready}.
        """
        for _ in range(4):
            self.ready.expectListener()
        self.ready.listening("msgqueue", "127.0.0.1", 8080)
        self.ready.listening("publisher", "0.0.0.0", 9000, tls=False)
        self.ready.listening("subscriber", path="/run/wsq.sock", tls=False)
        self.assertFalse(self.ready.isReady)
        self.ready.listening("subscriber", address="PipeAddress()")
        self.assertEqual(readEvents(self.path), [
            {"event": "listening", "stage": "msgqueue", "host": "127.0.0.1", "port": 8080},
            {"event": "listening", "stage": "publisher", "host": "0.0.0.0", "port": 9000, "tls": False},
            {"event": "listening", "stage": "subscriber", "path": "/run/wsq.sock", "tls": False},
            {"event": "listening", "stage": "subscriber", "address": "PipeAddress()"},
            {"event": "ready"},
        ])

    def test_noFile(self) -> None:
        """
        Without --ready-file nothing is written, and the state is still tracked.
        """
        ready = ReadyFile(None)
        ready.expectListener()
        ready.listening("msgqueue", "127.0.0.1", 8080)
        self.assertTrue(ready.isReady)

    def test_unwritable(self) -> None:
        """
        A path that cannot be written is logged once; the daemon goes on.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ready = ReadyFile(os.path.join(self.path, "missing", "ready"))
        ready.expectListener()
        ready.listening("msgqueue", "127.0.0.1", 8080)
        ready.listening("msgqueue", "127.0.0.1", 8081)
        self.assertTrue(ready.isReady)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("--ready-file", errors[0]["log_format"])


class DaemonReadyFileTests(TestCase):
    """
    Real daemons report their readiness (here on the pipe that tests.daemons gives
    every daemon as C{--ready-file /dev/fd/3}).
    """

    timeout = 60

    async def test_publisherAndMsgqueue(self) -> None:
        """
        msgqueue says it listens and is ready; a publisher says it listens, that its
        link opened and that it is ready, and when msgqueue stops, that the link closed.
        """
        msgqueue = await startDaemon(self, "wsqueue-msgqueue", "--store", "memory")
        await msgqueue.waitForEvents("ready")
        self.assertEqual(msgqueue.history, [
            {"event": "listening", "stage": "msgqueue", "host": "127.0.0.1", "port": msgqueue.port},
            {"event": "ready"},
        ])
        publisher = await startDaemon(self, "wsqueue-publisher", "--queue", msgqueue.url)
        await publisher.waitForEvents("ready")
        msgqueue.kill(signal.SIGTERM)
        await msgqueue.waitForExit()
        await publisher.waitForEvents("link-closed")
        events = publisher.history
        self.assertEqual([e["event"] for e in events], ["listening", "link-open", "ready", "link-closed"])
        self.assertEqual(events[0], {"event": "listening", "stage": "publisher", "host": "127.0.0.1",
                                     "port": publisher.port})
        self.assertTrue(events[1]["url"].startswith(f"{msgqueue.url}/pushmsg?producer="))
