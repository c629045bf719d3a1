"""
Sign-in throttling (L{wsqueue.throttle}): units on a clock, and a password-guessing
attack from 16 parallel clients against a real daemon, during which a legitimate
sign-in from another address is timed.
"""

from __future__ import annotations

import os
import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.daemons import runProcess, startDaemon
from tests.helpers import caPath, rawRequest, upgradeRequest
from tests.test_curl import CURL, requireExecutable
from wsqueue.auth import basicHeader, hashPassword, writeCredentialsFile
from wsqueue.throttle import FailureThrottle, HashQueue, Throttled


class FailureThrottleTests(SynchronousTestCase):
    def test_blocksAddressAndUser(self) -> None:
        clock = Clock()
        throttle = FailureThrottle(clock, maxFailures=3, window=10, block=30)
        for _ in range(3):
            throttle.check("1.2.3.4", "alice")
            throttle.failed("1.2.3.4", "alice")
        with self.assertRaises(Throttled) as raised:
            throttle.check("1.2.3.4", "bob")  # the address
        self.assertEqual((raised.exception.status, raised.exception.retryAfter), (429, 31))
        with self.assertRaises(Throttled):
            throttle.check("5.6.7.8", "alice")  # the user name
        throttle.check("5.6.7.8", "bob")
        clock.advance(30)
        throttle.check("1.2.3.4", "alice")

    def test_windowAndSuccess(self) -> None:
        clock = Clock()
        throttle = FailureThrottle(clock, maxFailures=3, window=10, block=30)
        throttle.failed("a", "alice")
        throttle.failed("a", "alice")
        clock.advance(11)
        throttle.failed("a", "alice")  # the first two are out of the window
        throttle.check("a", "alice")
        throttle.failed("b", "carol")
        throttle.failed("b", "carol")
        throttle.succeeded("c", "carol")  # the user's count is forgotten...
        throttle.failed("d", "carol")
        throttle.check("e", "carol")


class HashQueueTests(SynchronousTestCase):
    def test_boundedWithPriority(self) -> None:
        started: list[tuple[str, Deferred]] = []

        def runInThread(check):
            d: Deferred = Deferred()
            started.append((check(), d))
            return d

        hashes = HashQueue(runInThread, concurrency=1, maxWaiting=2)
        first = hashes.run(lambda: "attacker 1", priority=False)
        waiting = [hashes.run(lambda: "attacker 2", priority=False), hashes.run(lambda: "attacker 3", priority=False)]
        self.failureResultOf(hashes.run(lambda: "attacker 4", priority=False), Throttled)
        known = hashes.run(lambda: "known user", priority=True)
        # The known user took the newest attacker's place, and goes next.
        self.failureResultOf(waiting[1], Throttled)
        started[0][1].callback("done")
        self.assertEqual(self.successResultOf(first), "done")
        self.assertEqual(started[1][0], "known user")
        started[1][1].callback("ok")
        self.assertEqual(self.successResultOf(known), "ok")
        self.assertEqual(started[2][0], "attacker 2")
        self.assertNoResult(waiting[0])


class AttackTests(TestCase):
    """
    16 clients guess passwords as fast as the daemon answers; a user who knows
    their password signs in from another address meanwhile.
    """

    timeout = 90

    async def test_legitimateSignInDuringAttack(self) -> None:
        requireExecutable(CURL)
        credentials = os.path.abspath(self.mktemp())
        writeCredentialsFile(credentials, {"alice": hashPassword("right"), "bob": hashPassword("secret")})
        # Listening on every loopback address, so that the user can come from another one.
        publisher = await startDaemon(self, "wsqueue-publisher", "--credentials", credentials,
                                      "--interface", "0.0.0.0", "--queue", "wss://localhost:1")
        port = publisher.port
        answers: dict[str, int] = {}
        attacking = True

        async def attacker(number: int) -> None:
            rng = random.Random(number)
            while attacking:
                user = rng.choice(["alice", f"nobody{rng.randrange(1000)}"])
                response = await rawRequest(port, upgradeRequest(port, "/publish", basicHeader(user, f"guess{rng.random()}")))
                status = response.split(b" ", 2)[1].decode() if response else "none"
                answers[status] = answers.get(status, 0) + 1

        attackers = [Deferred.fromCoroutine(attacker(number)) for number in range(16)]
        # Let the attack get going, then sign in as bob from 127.0.0.2 and time it.
        while sum(answers.values()) < 50:
            await deferLaterSeconds(0.05)
        code, output = await runProcess([
            CURL, "-sS", "--interface", "127.0.0.2", "--cacert", caPath(), "-o", "/dev/null",
            "-w", "%{http_code} %{time_total}", "-u", "bob:secret", "-X", "POST", f"https://localhost:{port}/ticket",
        ])
        attacking = False
        await DeferredList(attackers)
        self.assertEqual(code, 0, output)
        status, seconds = output.split()
        self.assertEqual(status, "200", output)
        self.assertLess(float(seconds), 1.0, f"bob's sign-in took {seconds} s during the attack")
        # The attackers were refused without their passwords being checked: 429
        # (too many failures) or 503 (too many checks waiting), and never a 500.
        self.assertGreater(answers.get("429", 0), 0, answers)
        self.assertNotIn("500", answers)
        self.assertIn("refused", publisher.logText())
        print(f"\nFIGURES test_legitimateSignInDuringAttack: bob {float(seconds):.3f} s, attackers' answers {answers}")


def deferLaterSeconds(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d

