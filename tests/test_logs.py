"""
C{--log-format json}: one JSON object per event on standard output, from a real
daemon, with the user, address and endpoint on connection events, and never a
password, ticket or cookie.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from tests.daemons import freePort, startDaemon
from tests.helpers import Clients, waitFor
from tests.test_curl import CURL, requireExecutable
from tests.test_http import curlHTTP


class JSONLogTests(TestCase):
    timeout = 60

    async def test_jsonLines(self) -> None:
        requireExecutable(CURL)
        subscriber = await startDaemon(self, "wsqueue-subscriber", "--log-format", "json",
                                       "--queue", f"wss://localhost:{freePort()}")
        clients = Clients(self)
        client = await clients.connect(subscriber.port, "/subscribe")
        ticket = (await curlHTTP(subscriber.port, "/ticket", "-u", "hello:test", "-X", "POST")).json["Ticket"]
        login = await curlHTTP(subscriber.port, "/login", "-d", "user=hello&password=test")
        cookie = login.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        await self.assertFailure(clients.connect(subscriber.port, "/subscribe", "hello", "wrong-password"), Exception)
        client.sendClose(1000)
        await waitFor(lambda: "left {path}" in subscriber.output,
                      what=f"the disconnection logged; output: {subscriber.output[:3000]!r}; log: {subscriber.logText()[:2000]!r}")

        events = [json.loads(line) for line in subscriber.output.splitlines() if line.startswith("{")]
        self.assertGreater(len(events), 5)
        self.assertEqual([line for line in subscriber.output.splitlines() if line and not line.startswith("{")], [])
        connected = [event for event in events if event.get("log_format", "").endswith("connected to {path}")]
        self.assertEqual(len(connected), 1, events)
        self.assertEqual((connected[0]["user"], connected[0]["endpoint"], connected[0]["address"]),
                         ("hello", "/subscribe", "127.0.0.1"))
        left = [event for event in events if "left {path}" in event.get("log_format", "")]
        self.assertEqual((left[0]["user"], left[0]["code"]), ("hello", 1000))
        self.assertTrue(any(event.get("log_level", {}).get("name") == "info" for event in events))
        for secret in ("test", "wrong-password", ticket, cookie):
            self.assertNotIn(f'"{secret}"' if secret == "test" else secret, subscriber.output)
        # The log file twistd would have written holds nothing: the events went to standard output.
        self.assertNotIn("connected to /subscribe", subscriber.logText())
