# -*- test-case-name: tests.test_access -*-
"""
Who a request comes from, and whether the page that made it may make it: the one
rule every public endpoint applies, to WebSocket handshakes and HTTP requests alike.

A request is authenticated by, in this order: an C{Authorization: Basic} header
(programs: C{wsqueue-client}, curl, the stages' links); a C{ticket} (a browser's
WebSocket, which cannot send that header: C{?ticket=} from C{POST /ticket}); or the
session cookie that C{POST /login} set.  Before any of them, a browser's C{Origin}
must be allowed (the daemon's own origin, or C{--allowed-origins}): otherwise any
page on any site could use a browser's cookie or cached credentials.  A cookie is
accepted only with an C{Origin} header, so that a request whose origin is unknown
can never ride on a browser's session (CSRF).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed

from wsqueue.auth import BasicAuthenticator
from wsqueue.connection import ServerStats
from wsqueue.signin import InvalidToken, Sessions, Tickets

SESSION_COOKIE = "wsqueue_session"
"""The name of the session cookie C{POST /login} sets."""


class Forbidden(Exception):
    """
    The request is refused whoever sent it (HTTP 403): its C{Origin} is not allowed,
    or it carries a session cookie without an C{Origin}.
    """


OriginRule = Callable[[str, str], bool]
"""C{(origin, host) -> allowed}: L{wsqueue.server.StageServerFactory.allowsOrigin}."""


class Access:
    """
    Authenticates the requests of one daemon.

    @ivar tickets: L{None} on a daemon that takes no tickets (msgqueue).
    @ivar sessions: L{None} on a daemon that takes no session cookies (msgqueue).
    """

    def __init__(
        self,
        authenticator: BasicAuthenticator,
        allowsOrigin: OriginRule,
        tickets: Tickets | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.allowsOrigin = allowsOrigin
        self.tickets = tickets
        self.sessions = sessions
        self.stats = ServerStats()
        """Where refusals are counted: the server's (L{wsqueue.server.ServerStats})."""

    def checkOrigin(self, headers: Mapping[str, str]) -> None:
        """
        Raise L{Forbidden} when the request comes from a page whose origin may not
        use this daemon.  Requests without an C{Origin} (programs) pass.
        """
        origin = headers.get("origin")
        if origin is not None and not self.allowsOrigin(origin, headers.get("host", "")):
            raise Forbidden("Origin not allowed")

    def authenticate(self, headers: Mapping[str, str], ticket: str | None = None, address: str = "") -> Deferred[str]:
        """
        Fire with the user a request comes from (C{headers}' names lower-cased;
        C{ticket} from the URL); fail with L{Forbidden} or L{UnauthorizedLogin}.
        """
        try:
            self.checkOrigin(headers)
        except Forbidden as e:
            return fail(e)
        authorization = headers.get("authorization")
        if not authorization:
            if ticket is not None:
                return self._redeem(ticket)
            cookie = sessionCookie(headers.get("cookie"))
            if cookie is not None and self.sessions is not None:
                if "origin" not in headers:
                    return fail(Forbidden("a session cookie is accepted only with an Origin header"))
                return self._session(cookie)
        # Also without a header: the authenticator says what is missing.
        return self.authenticator.authenticate(authorization, address)

    def _redeem(self, ticket: str) -> Deferred[str]:
        if self.tickets is None:
            return fail(UnauthorizedLogin("this daemon takes no tickets"))
        try:
            return succeed(self.tickets.redeem(ticket))
        except InvalidToken as e:
            return fail(UnauthorizedLogin(f"ticket: {e.reason}"))

    def _session(self, cookie: str) -> Deferred[str]:
        assert self.sessions is not None
        try:
            return succeed(self.sessions.verify(cookie))
        except InvalidToken as e:
            return fail(UnauthorizedLogin(f"session: {e.reason}"))

    def sessionUser(self, headers: Mapping[str, str]) -> str | None:
        """
        The user of a valid session cookie among C{headers}, else L{None} (for
        C{GET /session}, which reveals nothing to another origin: browsers do not
        let a foreign page read the answer).
        """
        cookie = sessionCookie(headers.get("cookie"))
        if cookie is None or self.sessions is None:
            return None
        try:
            return self.sessions.verify(cookie)
        except InvalidToken:
            return None


def hostName(host: str) -> str:
    """
    The host name of a C{Host} header's value, without its port (an IPv6 address
    keeps its brackets): the part an origin on another port of the same host shares.
    """
    return host if host.endswith("]") else host.rsplit(":", 1)[0]


def sessionCookie(header: str | None) -> str | None:
    """
    The value of the L{SESSION_COOKIE} in a C{Cookie} header, else L{None}.
    """
    if not header:
        return None
    for pair in header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name == SESSION_COOKIE:
            return value.strip().strip('"')
    return None
