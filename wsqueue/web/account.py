# -*- test-case-name: tests.test_web -*-
"""
Browser sign-in on the public daemons: C{POST /login} and C{POST /logout} (a signed
session cookie), C{GET /session} (who the cookie signs in), and C{POST /ticket} (a
single-use ticket for a WebSocket URL, C{?ticket=}).  See L{wsqueue.signin} for
what tickets and sessions are, and L{wsqueue.access} for the rules.
"""

from __future__ import annotations

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from wsqueue.access import SESSION_COOKIE, Access, Forbidden
from wsqueue.signin import InvalidToken, Sessions, Tickets
from wsqueue.throttle import Throttled
from wsqueue.web.site import (
    AuthenticatedResource,
    JSONResource,
    answer,
    answerThrottled,
    clientAddress,
    headersOf,
    jsonBody,
)


def setSessionCookie(request: Request, value: str, maxAge: int) -> None:
    """
    Set the session cookie: HttpOnly (no script reads it), Secure (never sent
    over plain HTTP), SameSite=Strict (never sent with another site's request).
    """
    request.addCookie(
        SESSION_COOKIE.encode("ascii"), value.encode("ascii"), max_age=str(maxAge).encode("ascii"),
        path=b"/", secure=True, httpOnly=True, sameSite="strict",
    )


class _OriginChecked(JSONResource):
    """
    What L{LoginResource} and L{LogoutResource} share: a request from a page whose
    origin may not use the daemon is refused (403) before anything else, so that no
    other site can sign a browser in or out.
    """

    def __init__(self, access: Access, sessions: Sessions) -> None:
        super().__init__()
        self.access = access
        self.sessions = sessions

    def refusedOrigin(self, request: Request) -> bytes | None:
        try:
            self.access.checkOrigin(headersOf(request))
        except Forbidden as e:
            self.access.stats.refuse("origin")
            self.log.info("refused {peer} on {path}: {reason}", peer=str(request.getClientAddress()),
                          path=request.path.decode("latin-1"), reason=e)
            return jsonBody(request, 403, {"Error": str(e)})
        return None


class LoginResource(_OriginChecked):
    """
    C{POST /login} with the form fields C{user} and C{password}: 200
    C{{"User": u, "Expires": t}} and the session cookie, or 401.
    """

    def render_POST(self, request: Request) -> bytes | int:
        refused = self.refusedOrigin(request)
        if refused is not None:
            return refused
        args = request.args or {}
        users, passwords = args.get(b"user"), args.get(b"password")
        if not users or not passwords or len(users) > 1 or len(passwords) > 1:
            return jsonBody(request, 400, {"Error": "give the form fields user and password, once each"})
        d = self.access.authenticator.login(UsernamePassword(users[0], passwords[0]), clientAddress(request))
        d.addCallbacks(self._signedIn, self._wrong, callbackArgs=(request,), errbackArgs=(request,))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _signedIn(self, user: str, request: Request) -> None:
        try:
            value, expires = self.sessions.issue(user)
        except InvalidToken:
            # The stages' internal account: it has no password to bind a session to.
            answer(request, 401, {"Error": "wrong user name or password"})
            return
        setSessionCookie(request, value, int(self.sessions.ttl))
        self.log.info("{peer} signed in as {user}", peer=str(request.getClientAddress()), user=user)
        answer(request, 200, {"User": user, "Expires": expires})

    def _wrong(self, failure: Failure, request: Request) -> None:
        failure.trap(UnauthorizedLogin, Throttled)
        if failure.check(Throttled):
            self.access.stats.refuse("throttled")
            answerThrottled(request, failure.value)  # type: ignore[arg-type]
            return
        self.access.stats.refuse("auth")
        self.access.stats.signinFailures += 1
        self.log.info("refused {peer} on /login: wrong user name or password", peer=str(request.getClientAddress()))
        answer(request, 401, {"Error": "wrong user name or password"})

    def _failed(self, failure: Failure, request: Request) -> None:
        self.log.failure("signing in failed", failure)
        answer(request, 500, {"Error": "internal error"})


class LogoutResource(_OriginChecked):
    """
    C{POST /logout}: clears the session cookie (200 C{{"User": null}}).

    The cookie is signed, not stored: it cannot be revoked on its own, only
    forgotten by the browser; changing the user's password ends every session.
    """

    def render_POST(self, request: Request) -> bytes:
        refused = self.refusedOrigin(request)
        if refused is not None:
            return refused
        setSessionCookie(request, "", 0)
        return jsonBody(request, 200, {"User": None})


class SessionResource(JSONResource):
    """
    C{GET /session}: C{{"User": u}} when the browser's session cookie is valid, else
    401 (the console asks this on load, and after a refused WebSocket).
    """

    def __init__(self, access: Access) -> None:
        super().__init__()
        self.access = access

    def render_GET(self, request: Request) -> bytes:
        user = self.access.sessionUser(headersOf(request))
        if user is None:
            return jsonBody(request, 401, {"Error": "not signed in"})
        return jsonBody(request, 200, {"User": user})


class TicketResource(AuthenticatedResource):
    """
    C{POST /ticket} (Basic, or a session cookie with an allowed C{Origin}): 200
    C{{"Ticket": t, "Expires": unix time}}, a single-use ticket for C{?ticket=t} on
    the WebSocket URL of either public daemon.
    """

    def __init__(self, access: Access, tickets: Tickets) -> None:
        super().__init__(access)
        self.tickets = tickets

    def render_POST(self, request: Request) -> int:
        return self.authenticated(request, lambda user: self._issue(user, request))

    def _issue(self, user: str, request: Request) -> None:
        ticket, expires = self.tickets.issue(user)
        answer(request, 200, {"Ticket": ticket, "Expires": expires})
