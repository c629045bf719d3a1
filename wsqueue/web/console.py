# -*- test-case-name: tests.test_web -*-
"""
The web console the subscriber serves at C{/}: one static page (C{console/}: HTML,
vanilla JavaScript, CSS; no build step) that signs in, subscribes, shows arriving
messages and publishes through the publisher with a ticket.

Every file goes out with a strict Content-Security-Policy: scripts and styles only
from the daemon itself (nothing inline, no eval), connections only to the daemon
and to the publisher's WebSocket, no framing, no forms to elsewhere.  With the
page writing everything it shows as text (never as HTML), a message whose content
is markup cannot run in the page.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from twisted.web.server import Request

from wsqueue.access import hostName
from wsqueue.web.site import JSONResource, jsonBody

FILES = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"console.js": ("console.js", b"text/javascript; charset=utf-8"),
    b"console.css": ("console.css", b"text/css; charset=utf-8"),
}
"""The console's paths under C{/}, and the file and content type of each."""

DEFAULT_PUBLISHER_PORT = 8081


def readConsoleFile(name: str) -> bytes:
    """
    One of the console's files, from the installed package.
    """
    return resources.files("wsqueue.web").joinpath("console", name).read_bytes()


def publisherURL(configured: str | None, host: str, port: int = DEFAULT_PUBLISHER_PORT) -> str:
    """
    The publisher's C{/publish} URL for a page the browser loaded from C{host} (the
    C{Host} header): C{configured} (C{--publisher-url}) when given, else the
    publisher's default port on the same host name.
    """
    if configured:
        return configured
    return f"wss://{hostName(host) or 'localhost'}:{port}/publish"


def contentSecurityPolicy(publisher: str) -> bytes:
    """
    The console's policy: everything from the daemon itself, and WebSockets also to
    the publisher's origin.
    """
    parts = urlsplit(publisher)
    publisherOrigin = f"{parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {publisherOrigin}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ).encode("ascii")


class ConsoleResource(JSONResource):
    """
    The console's files and its C{/config.json} (C{{"Publisher": url}}).

    @ivar publisher: C{--publisher-url}, or L{None} to derive it per request.
    """

    def __init__(self, path: bytes, publisher: str | None, publisherPort: int = DEFAULT_PUBLISHER_PORT) -> None:
        super().__init__()
        self.path = path
        self.publisher = publisher
        self.publisherPort = publisherPort

    def _publisherFor(self, request: Request) -> str:
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        return publisherURL(self.publisher, host, self.publisherPort)

    def render_GET(self, request: Request) -> bytes:
        publisher = self._publisherFor(request)
        request.setHeader(b"Content-Security-Policy", contentSecurityPolicy(publisher))
        request.setHeader(b"X-Frame-Options", b"DENY")
        if self.path == b"config.json":
            return jsonBody(request, 200, {"Publisher": publisher})
        name, contentType = FILES[self.path]
        request.setHeader(b"Content-Type", contentType)
        return readConsoleFile(name)


def consoleRoutes(publisher: str | None, publisherPort: int = DEFAULT_PUBLISHER_PORT) -> dict[bytes, ConsoleResource]:
    """
    The console's resources, by path under C{/}.
    """
    return {path: ConsoleResource(path, publisher, publisherPort) for path in [*FILES, b"config.json"]}
