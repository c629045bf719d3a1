"""
L{wsqueue.access}: which credentials a request may carry, and the Origin rules.
"""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.access import Access, Forbidden, sessionCookie
from wsqueue.auth import basicHeader, makeAuthenticator
from wsqueue.connection import Limits
from wsqueue.server import StageServerFactory
from wsqueue.signin import Sessions, Tickets

OWN = {"host": "localhost:8082", "origin": "https://localhost:8082"}


class AccessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.factory = StageServerFactory({}, makeAuthenticator(None, self.clock), Limits(), self.clock)
        self.tickets = Tickets(b"t" * 32, self.clock)
        self.sessions = Sessions(b"t" * 32, self.clock, 60, self.factory.authenticator.stampOf)
        self.access = Access(self.factory.authenticator, self.factory.allowsOrigin, self.tickets, self.sessions)

    def user(self, headers: dict[str, str], ticket: str | None = None) -> str:
        return self.successResultOf(self.access.authenticate(headers, ticket))

    def refusal(self, headers: dict[str, str], ticket: str | None = None) -> type:
        return self.failureResultOf(self.access.authenticate(headers, ticket), UnauthorizedLogin, Forbidden).type

    def test_basic(self) -> None:
        self.assertEqual(self.user({"authorization": basicHeader("hello", "test")}), "hello")
        self.assertIs(self.refusal({"authorization": basicHeader("hello", "nope")}), UnauthorizedLogin)
        self.assertIs(self.refusal({}), UnauthorizedLogin)

    def test_ticketOnce(self) -> None:
        ticket, _ = self.tickets.issue("alice")
        self.assertEqual(self.user(OWN, ticket), "alice")
        self.assertIs(self.refusal(OWN, ticket), UnauthorizedLogin)
        self.assertIs(self.refusal(OWN, "forged.ticket"), UnauthorizedLogin)

    def test_basicFirst(self) -> None:
        """
        A request with an Authorization header is judged by it alone: a wrong
        password is not rescued by a ticket, and a right one does not use the ticket up.
        """
        ticket, _ = self.tickets.issue("alice")
        self.assertIs(self.refusal({"authorization": basicHeader("hello", "nope")}, ticket), UnauthorizedLogin)
        self.assertEqual(self.user({"authorization": basicHeader("hello", "test")}, ticket), "hello")
        self.assertEqual(self.tickets.remembered, 0)

    def test_sessionNeedsOrigin(self) -> None:
        value, _ = self.sessions.issue("hello")
        cookie = f"other=1; wsqueue_session={value}"
        self.assertEqual(self.user({**OWN, "cookie": cookie}), "hello")
        self.assertIs(self.refusal({"host": "localhost:8082", "cookie": cookie}), Forbidden)
        self.assertIs(self.refusal({**OWN, "cookie": "wsqueue_session=garbage"}), UnauthorizedLogin)

    def test_foreignOriginFirst(self) -> None:
        """
        A foreign Origin is refused whatever credentials come with it.
        """
        headers = {"host": "localhost:8082", "origin": "https://evil.example", "authorization": basicHeader("hello", "test")}
        self.assertIs(self.refusal(headers), Forbidden)
        self.assertIs(self.refusal({**headers, "origin": "null"}), Forbidden)

    def test_origins(self) -> None:
        allows = self.factory.allowsOrigin
        self.assertTrue(allows("https://localhost:8082", "localhost:8082"))
        self.assertTrue(allows("HTTPS://LOCALHOST:8082", "localhost:8082"))
        self.assertFalse(allows("https://localhost:8081", "localhost:8082"))
        self.assertFalse(allows("https://localhost:8082", ""))
        self.factory.siblingPorts = frozenset({8081, 8082})
        self.assertTrue(allows("https://localhost:8081", "localhost:8082"))
        self.assertTrue(allows("https://[::1]:8081", "[::1]:8082"))
        self.assertFalse(allows("https://localhost:8083", "localhost:8082"))
        self.factory.permittedOrigins = frozenset({"https://app.example.org", "null"})
        self.assertTrue(allows("https://app.example.org", "localhost:8082"))
        self.assertTrue(allows("null", "localhost:8082"))

    def test_sessionUser(self) -> None:
        value, _ = self.sessions.issue("hello")
        self.assertEqual(self.access.sessionUser({"cookie": f"wsqueue_session={value}"}), "hello")
        self.clock.advance(60)
        self.assertIsNone(self.access.sessionUser({"cookie": f"wsqueue_session={value}"}))

    def test_sessionCookie(self) -> None:
        self.assertEqual(sessionCookie("a=1; wsqueue_session=abc.def; b=2"), "abc.def")
        self.assertEqual(sessionCookie('wsqueue_session="abc.def"'), "abc.def")
        self.assertIsNone(sessionCookie("wsqueue_sessionx=1"))
        self.assertIsNone(sessionCookie(None))
