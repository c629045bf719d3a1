"""
Wildcard subscriptions and topic permissions end to end: real C{twistd} daemons
(msgqueue, publisher, subscriber) and clients over C{wss://}.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import TestCase

from tests.daemons import startDaemonPipeline
from tests.helpers import Clients, nextJSON, noFrameWithin
from tests.test_http import curlHTTP, writeFile
from wsqueue.auth import hashPassword, writeCredentialsFile
from wsqueue.client import ClientProtocol


def send(client: ClientProtocol, frame: dict) -> None:
    client.sendMessage(json.dumps(frame).encode("utf-8"))


class WildcardTests(TestCase):
    timeout = 60

    async def test_wildcards(self) -> None:
        """
        C{news.*} matches one token, C{news.>} one or more; a client whose
        subscriptions overlap receives each message once, with its concrete topic;
        publishing to a pattern is refused.
        """
        pipeline = await startDaemonPipeline(self)
        clients = Clients(self)
        overlapping = await clients.connect(pipeline.subscriber.port, "/subscribe")
        oneToken = await clients.connect(pipeline.subscriber.port, "/subscribe")
        for client, patterns in [(overlapping, ["news.eu", "news.*", "news.>"]), (oneToken, ["news.*"])]:
            for index, pattern in enumerate(patterns):
                send(client, {"Topic": pattern, "Content": "sub", "Id": index})
                self.assertEqual(await nextJSON(client), {"Ack": index})
        publisher = await clients.connect(pipeline.publisher.port, "/publish")
        for index, topic in enumerate(["news.eu", "news.eu.fr", "sport", "news"]):
            send(publisher, {"Topic": topic, "Content": f"m{index}", "Id": index})
            self.assertEqual(await nextJSON(publisher), {"Ack": index})
        send(publisher, {"Topic": "news.*", "Content": "x", "Id": "bad"})
        self.assertEqual(await nextJSON(publisher), {
            "Error": "Topic must not contain '*' or '>' (reserved for wildcards)", "Id": "bad"})

        received = [await nextJSON(overlapping), await nextJSON(overlapping)]
        self.assertEqual([(frame["Topic"], frame["Content"]) for frame in received],
                         [("news.eu", "m0"), ("news.eu.fr", "m1")])
        self.assertEqual([(frame["Topic"], frame["Content"]) for frame in [await nextJSON(oneToken)]],
                         [("news.eu", "m0")])
        await noFrameWithin(overlapping, 0.5)
        await noFrameWithin(oneToken, 0.1)

        send(overlapping, {"Topic": "news.>.x", "Content": "sub", "Id": "bad"})
        self.assertEqual(await nextJSON(overlapping), {"Error": "'>' must be the last token of a pattern", "Id": "bad"})


ACL_RULES = """
# alice publishes news; everyone reads one level of news; bob also reads sport
alice publish news.>
* subscribe news.*
bob subscribe sport
"""


class PermissionTests(TestCase):
    """
    C{--acl} on the publisher and the subscriber, with a credentials file.
    """

    timeout = 90

    async def test_acl(self) -> None:
        """
        What the ACL does not allow is refused with C{{"Error": "not allowed", "Id"}}
        on both endpoints and 403 on HTTP publish; a rewritten ACL is in force within
        seconds, and ends the subscriptions it no longer allows with an Error naming
        the topic.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        credentials = os.path.join(directory, "users")
        writeCredentialsFile(credentials, {"alice": hashPassword("a"), "bob": hashPassword("b")})
        acl = os.path.join(directory, "acl")
        writeFile(acl, ACL_RULES)
        common = ("--credentials", credentials, "--acl", acl)
        pipeline = await startDaemonPipeline(self, subscribers=[common], publisherArgs=common)
        clients = Clients(self)
        alice = await clients.connect(pipeline.publisher.port, "/publish", "alice", "a")
        bob = await clients.connect(pipeline.publisher.port, "/publish", "bob", "b")
        reader = await clients.connect(pipeline.subscriber.port, "/subscribe", "bob", "b")

        for pattern, reply in [
            ("sport", {"Ack": "sport"}),
            ("news.eu", {"Ack": "news.eu"}),
            ("news.*", {"Ack": "news.*"}),
            ("news.>", {"Error": "not allowed", "Id": "news.>"}),
            ("weather", {"Error": "not allowed", "Id": "weather"}),
        ]:
            send(reader, {"Topic": pattern, "Content": "sub", "Id": pattern})
            self.assertEqual(await nextJSON(reader), reply, pattern)

        for client, topic, reply in [
            (alice, "news.eu", {"Ack": 1}),
            (alice, "sport", {"Error": "not allowed", "Id": 1}),
            (bob, "news.eu", {"Error": "not allowed", "Id": 1}),
        ]:
            send(client, {"Topic": topic, "Content": "x", "Id": 1})
            self.assertEqual(await nextJSON(client), reply, topic)
        delivered = await nextJSON(reader)
        self.assertEqual((delivered["Topic"], delivered["Content"]), ("news.eu", "x"))

        refused = await curlHTTP(pipeline.publisher.port, "/publish", "-u", "bob:b", "-d", '{"Topic": "news.eu", "Content": "x"}')
        self.assertEqual((refused.status, refused.json), (403, {"Error": "not allowed: news.eu"}))
        accepted = await curlHTTP(pipeline.publisher.port, "/publish", "-u", "alice:a", "-d", '{"Topic": "news.eu", "Content": "y"}')
        self.assertEqual((accepted.status, accepted.json), (200, {"Acked": 1}))
        self.assertEqual((await nextJSON(reader))["Content"], "y")

        # Everyone's news.* rule goes: bob's news subscriptions end, sport stays.
        writeFile(acl, "alice publish >\nbob subscribe sport\n")
        ended = [await nextJSON(reader, timeout=5), await nextJSON(reader, timeout=5)]
        self.assertEqual(sorted(ended, key=lambda frame: frame["Topic"]), [
            {"Error": "not allowed", "Topic": "news.*"}, {"Error": "not allowed", "Topic": "news.eu"}])
        await pipeline.publisher.waitForLog(f"ACL file {acl} reloaded")
        send(alice, {"Topic": "news.eu", "Content": "after", "Id": 2})
        send(alice, {"Topic": "sport", "Content": "now allowed", "Id": 3})
        self.assertEqual([await nextJSON(alice), await nextJSON(alice)], [{"Ack": 2}, {"Ack": 3}])
        self.assertEqual((await nextJSON(reader))["Content"], "now allowed")
        await noFrameWithin(reader, 0.3)


async def subscribeSince(client: ClientProtocol, topic: str, since: dict | None, requestId: object = "s") -> dict:
    frame: dict = {"Topic": topic, "Content": "sub", "Id": requestId}
    if since is not None:
        frame["Since"] = since
    send(client, frame)
    return await nextJSON(client)


class RecoveryTests(TestCase):
    """
    A client that reconnects with C{Since} gets exactly what it missed, then live
    messages; or C{Recovered: false} when that cannot be promised.
    """

    timeout = 90

    async def publish(self, client: ClientProtocol, topic: str, *contents: str) -> None:
        for content in contents:
            send(client, {"Topic": topic, "Content": content, "Id": content})
            self.assertEqual(await nextJSON(client), {"Ack": content})

    async def test_recovery(self) -> None:
        pipeline = await startDaemonPipeline(self, msgqueueArgs=("--store", "memory", "--history-max", "5"))
        clients = Clients(self)
        publisher = await clients.connect(pipeline.publisher.port, "/publish")
        first = await clients.connect(pipeline.subscriber.port, "/subscribe")
        self.assertEqual(await subscribeSince(first, "news.*", None), {"Ack": "s"})
        await self.publish(publisher, "news.eu", "m1")
        last = await nextJSON(first)
        since = {"Offset": last["Offset"], "Epoch": last["Epoch"]}
        first.sendClose(1000)

        # Missed while away: two on the pattern, one elsewhere.
        await self.publish(publisher, "news.eu", "m2")
        await self.publish(publisher, "sport", "s1")
        await self.publish(publisher, "news.us", "m3")
        again = await clients.connect(pipeline.subscriber.port, "/subscribe")
        self.assertEqual(await subscribeSince(again, "news.*", since), {"Ack": "s", "Recovered": True})
        replayed = [await nextJSON(again), await nextJSON(again)]
        self.assertEqual([(frame["Topic"], frame["Content"]) for frame in replayed], [("news.eu", "m2"), ("news.us", "m3")])
        self.assertEqual([frame["Epoch"] for frame in replayed], [since["Epoch"]] * 2)
        await self.publish(publisher, "news.eu", "live")
        self.assertEqual((await nextJSON(again))["Content"], "live")
        await noFrameWithin(again, 0.3)

        # Another epoch: nothing replayed, and where the store is now.
        other = await clients.connect(pipeline.subscriber.port, "/subscribe")
        reply = await subscribeSince(other, "news.*", {"Offset": 1, "Epoch": "not-this-one"})
        self.assertEqual(reply, {"Ack": "s", "Recovered": False, "Epoch": since["Epoch"], "Offset": replayed[-1]["Offset"] + 1})
        await noFrameWithin(other, 0.3)

        # More than --history-max (5) missed: nothing replayed either.
        await self.publish(publisher, "news.eu", *[f"n{i}" for i in range(6)])
        late = await clients.connect(pipeline.subscriber.port, "/subscribe")
        reply = await subscribeSince(late, "news.eu", since)
        self.assertEqual((reply["Recovered"], reply["Epoch"]), (False, since["Epoch"]))
        await noFrameWithin(late, 0.3)

        # msgqueue restarts on a memory store: a new epoch, so no recovery.
        mark = pipeline.subscriber.eventMark()
        pipeline.msgqueue.kill()
        await pipeline.msgqueue.waitForExit()
        await pipeline.msgqueue.restart()
        await pipeline.subscriber.waitForLinks(since=mark)
        restarted = await clients.connect(pipeline.subscriber.port, "/subscribe")
        reply = await subscribeSince(restarted, "news.eu", since)
        self.assertEqual(reply["Recovered"], False)
        self.assertNotEqual(reply["Epoch"], since["Epoch"])

    async def test_badSince(self) -> None:
        pipeline = await startDaemonPipeline(self)
        client = await Clients(self).connect(pipeline.subscriber.port, "/subscribe")
        reply = await subscribeSince(client, "news", {"Offset": -1, "Epoch": "e"})
        self.assertEqual(reply, {"Error": 'Since must be {"Offset": n, "Epoch": e}: an integer of 0 or more and a string',
                                 "Id": "s"})
