"""
Revocation: changing a user's password in the credentials file, or removing the
user, closes their live connections (1008, "credentials revoked") within about a
second, on every daemon; other users carry on.  Real daemons, real clients.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.daemons import startDaemonPipeline
from tests.helpers import Clients, nextJSON, withTimeout
from wsqueue.auth import hashPassword, writeCredentialsFile


class RevocationTests(TestCase):
    timeout = 60

    async def test_revoked(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        credentials = os.path.join(directory, "users")
        hashes = {"alice": hashPassword("a"), "bob": hashPassword("b"), "carol": hashPassword("c")}
        writeCredentialsFile(credentials, hashes)
        args = ("--credentials", credentials)
        pipeline = await startDaemonPipeline(self, subscribers=[args], publisherArgs=args)
        clients = Clients(self)
        alicePublishing = await clients.connect(pipeline.publisher.port, "/publish", "alice", "a")
        aliceReading = await clients.connect(pipeline.subscriber.port, "/subscribe", "alice", "a")
        carol = await clients.connect(pipeline.subscriber.port, "/subscribe", "carol", "c")
        bob = await clients.connect(pipeline.subscriber.port, "/subscribe", "bob", "b")

        # Alice's password changes, Carol is removed; Bob's line is left as it was.
        writeCredentialsFile(credentials, {"alice": hashPassword("new"), "bob": hashes["bob"]})
        started = reactor.seconds()
        for client in (alicePublishing, aliceReading, carol):
            code, reason = await withTimeout(client.closed, 5, "the revoked connection to close")
            self.assertEqual((code, reason), (1008, "credentials revoked"))
        elapsed = reactor.seconds() - started
        print(f"\nFIGURES test_revoked: all three closed {elapsed:.2f} s after the file changed")
        self.assertLess(elapsed, 2.0)
        self.assertTrue(bob.isOpen)
        bob.sendMessage(b'{"Topic": "t", "Content": "sub", "Id": 1}')
        self.assertEqual(await nextJSON(bob), {"Ack": 1})
        # Alice signs in with her new password; the stages' links carried on.
        alice = await clients.connect(pipeline.publisher.port, "/publish", "alice", "new")
        alice.sendMessage(b'{"Topic": "t", "Content": "still flowing", "Id": 2}')
        self.assertEqual(await nextJSON(alice), {"Ack": 2})
        self.assertEqual((await nextJSON(bob))["Content"], "still flowing")
        self.assertIn("(carol) on /subscribe: credentials revoked", pipeline.subscriber.logText())
