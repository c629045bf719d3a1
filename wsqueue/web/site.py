# -*- test-case-name: tests.test_web -*-
"""
The twisted.web site of a public daemon, and what its resources share: JSON
answers (C{{"Error": reason}} for every failure, never an HTML page or a
traceback), a bounded request body, no library version in the C{Server} header,
and authentication through L{wsqueue.access}.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from wsqueue.access import Access, Forbidden
from wsqueue.auth import UNAUTHORIZED_HEADERS
from wsqueue.throttle import Throttled

IDLE_TIMEOUT = 60.0
"""Seconds an HTTP connection may stay idle between requests."""

SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"no-store",
}
"""Sent with every answer: nothing here is cacheable, and nothing is to be sniffed."""


class BoundedBody(io.BytesIO):
    """
    A request body kept in memory up to C{limit} bytes; past it, the rest is read
    and dropped, and L{tooLarge} says so (the resource answers 413): a client cannot
    make the daemon hold more than C{limit} bytes per request.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.tooLarge = False

    def write(self, data) -> int:
        if self.tooLarge or self.tell() + len(data) > self.limit:
            self.tooLarge = True
            return len(data)
        return super().write(data)


class WebRequest(Request):
    """
    A request on a public daemon: says C{Server: wsqueue} (not Twisted's version),
    and knows when its client has gone (L{gone}: an answer that comes later, from
    msgqueue, is then dropped).
    """

    gone = False

    def connectionLost(self, reason: Failure) -> None:
        self.gone = True
        super().connectionLost(reason)

    def render(self, resrc) -> None:
        self.setHeader(b"Server", b"wsqueue")
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().render(resrc)


class StageSite(Site):
    """
    The site a public daemon's L{wsqueue.server.StageServerFactory} hands plain
    HTTP requests to.  It logs no access lines: refusals are logged by the
    resources, as for WebSockets, and a publish API under load would flood the log.
    """

    requestFactory = WebRequest
    noisy = False
    displayTracebacks = False

    def __init__(self, root: Resource, reactor, maxBody: int) -> None:
        super().__init__(root, reactor=reactor, timeout=IDLE_TIMEOUT)
        self.maxBody = maxBody

    def getContentFile(self, length: int | None) -> BoundedBody:
        return BoundedBody(self.maxBody)

    def log(self, request) -> None:
        pass


def jsonBody(request: Request, code: int, body: Mapping[str, object]) -> bytes:
    """
    Set C{code} and the JSON content type on C{request}; return C{body} encoded.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def answer(request: Request, code: int, body: Mapping[str, object]) -> None:
    """
    Finish C{request} with C{code} and C{body}, unless its client has gone.
    """
    if request.finished or getattr(request, "gone", False):
        return
    request.write(jsonBody(request, code, body))
    request.finish()


def headersOf(request: Request) -> dict[str, str]:
    """
    The request's headers as L{wsqueue.access} reads them: names lower-cased,
    the first value of each.
    """
    return {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
        if values
    }


def answerThrottled(request: Request, throttled: Throttled) -> None:
    """
    Finish C{request} with 429 (or 503 when too many checks wait) and C{Retry-After}.
    """
    request.setHeader(b"Retry-After", str(throttled.retryAfter).encode("ascii"))
    answer(request, throttled.status, {"Error": throttled.reason})


def clientAddress(request: Request) -> str:
    """
    The client's address, as sign-in throttling counts it ("" for a UNIX socket).
    """
    return str(getattr(request.getClientAddress(), "host", ""))


class NotFound(Resource):
    """
    A JSON 404 for every path the site does not serve.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return jsonBody(request, 404, {"Error": "not found"})


class Root(Resource):
    """
    The site's root: its children, and L{NotFound} for the rest.
    """

    def __init__(self, children: Mapping[bytes, Resource]) -> None:
        super().__init__()
        for path, child in children.items():
            self.putChild(path, child)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()


class JSONResource(Resource):
    """
    A leaf that answers JSON: a method it does not have gets 405 with C{Allow}, and
    a body past the site's bound 413.  Subclasses define C{render_METHOD}.
    """

    isLeaf = True
    log = Logger()

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii", "replace")
        # HEAD is GET without the body (twisted.web drops it), where there is a GET.
        handler = getattr(self, f"render_{'GET' if method == 'HEAD' else method}", None)
        if handler is None:
            allowed = sorted(name[7:] for name in dir(self) if name.startswith("render_") and name[7:].isupper()
                             and name != "render_HEAD")
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
            return jsonBody(request, 405, {"Error": f"{method} is not allowed here; use {' or '.join(allowed)}"})
        content = request.content
        if isinstance(content, BoundedBody) and content.tooLarge:
            return jsonBody(request, 413, {"Error": f"request body is larger than {content.limit} bytes"})
        return handler(request)


class AuthenticatedResource(JSONResource):
    """
    A resource for signed-in users only: Basic, or a session cookie with an allowed
    C{Origin} (L{Access.authenticate}); 401 or 403 otherwise.
    """

    def __init__(self, access: Access) -> None:
        super().__init__()
        self.access = access

    def authenticated(self, request: Request, then: Callable[[str], None]) -> int:
        """
        Authenticate C{request}, then call C{then(user)}, which finishes it; a refusal
        or a failure is answered here.  Returns C{NOT_DONE_YET} for C{render}.
        """
        d: Deferred[str] = self.access.authenticate(headersOf(request), address=clientAddress(request))
        d.addCallbacks(then, self._refused, errbackArgs=(request,))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _refused(self, failure: Failure, request: Request) -> None:
        failure.trap(UnauthorizedLogin, Forbidden, Throttled)
        peer = request.getClientAddress()
        path = request.path.decode("latin-1")
        stats = self.access.stats
        if failure.check(Throttled):
            stats.refuse("throttled")
            answerThrottled(request, failure.value)  # type: ignore[arg-type]
            return
        if failure.check(Forbidden):
            stats.refuse("origin")
            self.log.info("refused {peer} on {path}: {reason}", peer=str(peer), path=path, reason=failure.value)
            answer(request, 403, {"Error": str(failure.value)})
            return
        stats.refuse("auth")
        stats.signinFailures += 1
        self.log.info("refused {peer} on {path}: missing or wrong credentials", peer=str(peer), path=path)
        if not request.getHeader(b"origin"):
            # Only programs are asked for a password: a browser would pop up a dialog.
            for name, value in UNAUTHORIZED_HEADERS:
                request.setHeader(name, value)
        answer(request, 401, {"Error": "missing or wrong credentials"})

    def _failed(self, failure: Failure, request: Request) -> None:
        self.log.failure("answering {path} failed", failure, path=request.path.decode("latin-1"))
        answer(request, 500, {"Error": "internal error"})


class WebSocketOnly(JSONResource):
    """
    A WebSocket endpoint's path asked for without a WebSocket handshake: 400, as the
    Go system answered (its clients' tests expect it).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def render_GET(self, request: Request) -> bytes:
        return jsonBody(request, 400, {"Error": f"{self.path} is a WebSocket endpoint: open it with a WebSocket client"})
