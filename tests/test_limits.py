"""
Connection and rate limits against real daemons and real clients: the refusal, its
status or close code, the counter, and that the other clients carry on.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from tests.daemons import freePort, startDaemonPipeline
from tests.helpers import Clients, nextJSON, withTimeout
from tests.test_metrics import scrape, value
from wsqueue.link import HandshakeFailed


class LimitTests(TestCase):
    timeout = 90

    async def test_limits(self) -> None:
        metricsPorts = {"publisher": freePort(), "subscriber": freePort()}
        pipeline = await startDaemonPipeline(
            self,
            publisherArgs=("--max-connections-per-address", "2", "--max-publish-rate", "5", "--publish-burst", "5",
                           "--metrics-port", str(metricsPorts["publisher"])),
            subscribers=[("--max-connections", "3", "--max-subscriptions", "2",
                          "--metrics-port", str(metricsPorts["subscriber"]))],
        )
        clients = Clients(self)

        # --max-connections 3 on the subscriber: the fourth is refused with 503.
        readers = [await clients.connect(pipeline.subscriber.port, "/subscribe") for _ in range(3)]
        failure = await self.assertFailure(clients.connect(pipeline.subscriber.port, "/subscribe"), HandshakeFailed)
        self.assertEqual(failure.status, 503)
        _, metrics = await scrape(metricsPorts["subscriber"])
        self.assertEqual(value(metrics, "wsqueue_connections_refused_total", 'reason="limit"'), 1)

        # --max-subscriptions 2: a third subscription is refused; the two work.
        reader = readers[0]
        for number, topic in enumerate(["a", "b", "c"]):
            reader.sendMessage(json.dumps({"Topic": topic, "Content": "sub", "Id": number}).encode())
        replies = [await nextJSON(reader) for _ in range(3)]
        self.assertEqual(replies[:2], [{"Ack": 0}, {"Ack": 1}])
        self.assertEqual(replies[2], {"Error": "at most 2 subscriptions per connection", "Id": 2})

        # --max-connections-per-address 2 on the publisher: a third from 127.0.0.1 gets 503.
        fast = await clients.connect(pipeline.publisher.port, "/publish")
        steady = await clients.connect(pipeline.publisher.port, "/publish")
        failure = await self.assertFailure(clients.connect(pipeline.publisher.port, "/publish"), HandshakeFailed)
        self.assertEqual(failure.status, 503)

        # --max-publish-rate 5, burst 5: the sixth message in a row closes the connection.
        for number in range(10):
            fast.sendMessage(json.dumps({"Topic": "a", "Content": f"fast{number}", "Id": number}).encode())
        code, reason = await withTimeout(fast.closed, 5, "the fast publisher to be closed")
        self.assertEqual((code, reason), (1008, "publish rate above 5 messages/s"))
        steady.sendMessage(b'{"Topic": "b", "Content": "steady", "Id": "s"}')
        self.assertEqual(await nextJSON(steady), {"Ack": "s"})
        contents = []
        while "steady" not in contents:
            contents.append((await nextJSON(reader))["Content"])
        # What the fast client sent within its burst was published, nothing after.
        self.assertEqual(contents, [f"fast{number}" for number in range(5)] + ["steady"])
        _, metrics = await scrape(metricsPorts["publisher"])
        self.assertEqual(value(metrics, "wsqueue_rate_limit_closes_total"), 1)
        self.assertEqual(value(metrics, "wsqueue_connections_refused_total", 'reason="limit"'), 1)
        # The other readers were never disturbed.
        self.assertTrue(all(other.isOpen for other in readers))
