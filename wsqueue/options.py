# -*- test-case-name: tests.test_options -*-
"""
Command-line options shared by the daemons, and what they turn into.

The option names are a contract: tools outside the project (the benchmark, init
scripts) start the daemons with them.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.python import usage

from wsqueue.acl import ACLError, ACLFile
from wsqueue.auth import DEMO_PASSWORD, DEMO_USER, BasicAuthenticator, CredentialsFileError, makeAuthenticator
from wsqueue.connection import Limits
from wsqueue.link import QueueLink, QueueTarget
from wsqueue.metrics import DaemonMetrics
from wsqueue.readiness import readyFileOf
from wsqueue.signin import SecretError, Sessions, Tickets, loadSecret
from wsqueue.tls import TLSConfigurationError, clientEndpoint, defaultCAPath, defaultCertDir, parseURL

OptionTable = list[list[Any]]
"""What usage.Options reads from optParameters and optFlags: [long, short, default, doc, coerce]."""


class StartupError(Exception):
    """
    The daemon cannot start; the message is one line naming what is wrong.
    """


def _positiveInt(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def checkOrigin(origin: str) -> str:
    """
    C{origin} as an C{--allowed-origins} value: exactly what a browser sends in its
    C{Origin} header (C{scheme://host[:port]}, no path, no trailing slash), or
    C{null}; raise L{ValueError} saying what is wrong.
    """
    if origin == "null":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ValueError(f"{origin!r} is not an origin: give scheme://host[:port], as https://app.example.org")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{origin!r} is not an origin: no user or password in it")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port == -1 or port == 0:
        raise ValueError(f"{origin!r} has a bad port")
    return origin.lower()


def _nonNegativeInt(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be between 0 and 65535")
    return number


def _nonNegativeFloat(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> float:
    """
    Seconds from C{90}, C{90s}, C{15m}, C{12h} or C{7d}.
    """
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "s")
    seconds = float(number) * _UNITS[unit]
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def _positiveFloat(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number")
    return number


READY_FILE_HELP = (
    "Append a JSON line to this file when the daemon listens, when a link to msgqueue opens or closes, "
    "and {\"event\": \"ready\"} once all are up (see wsqueue.readiness) [default: none]."
)


LISTEN_HELP = (
    "Listen on this Twisted endpoint description instead of --port/--interface; give it again to listen "
    "on several. ssl:PORT[:interface=ADDR] is TLS with --cert-dir's certificate (or certKey=/privateKey= "
    "files); tls:DESCRIPTION wraps any description in that TLS (tls:unix:PATH, "
    "tls:systemd:domain=INET:index=0); tcp:PORT, unix:PATH and systemd:domain=INET:index=0 serve plain "
    "ws:// WITHOUT TLS, for a TLS-terminating proxy or local clients (logged as a warning). "
    "As in Twisted, tcp: and ssl: listen on every interface unless given interface= "
    "[default: none: TLS on --port and --interface]."
)

DEFAULT_INTERFACE = "127.0.0.1"

TLS_PREFIX = "tls"
"""The C{--listen} prefix that wraps any endpoint description in wsqueue's TLS."""


class ServerOptions(usage.Options):
    """
    Options every daemon has: where it listens, its certificate, its users, its limits.

    @ivar given: the options of the listening address given on the command line
        (C{port}, C{interface}), which C{--listen} replaces: given together, they
        are a usage error rather than one silently ignored.
    """

    defaultPort = 8080
    authenticator: BasicAuthenticator | None = None
    """The daemon's authenticator once built (see L{buildAuthenticator})."""

    optParameters: OptionTable = [
        ["cert-dir", None, None, "Folder holding server.crt and server.key [default: $WS_CERT_DIR, else ./certs]."],
        ["credentials", None, None, "Credentials file (see wsqueue-passwd) [default: only the demo account hello/test]."],
        ["max-message-size", None, 1024 * 1024, "Largest message a client may send, in bytes; bigger ones close with 1009.", _positiveInt],
        ["ping-interval", None, 20.0, "Seconds between WebSocket pings; a peer silent that long after a ping is dropped.", _positiveFloat],
        ["ready-file", None, None, READY_FILE_HELP],
        ["shutdown-timeout", None, 10.0, "Seconds a stop may take to finish what is in flight before it goes on regardless.", _positiveFloat],
        ["max-connections", None, 0, ("WebSocket connections this daemon holds at most; past it a handshake "
                                      "gets 503 (counted) [default: 0, no limit but the open-file limit]."),
         _nonNegativeInt],
        ["max-connections-per-address", None, 0, ("Connections from one client address at most; past it a "
                                                  "handshake gets 503 [default: 0, no limit]."), _nonNegativeInt],
        ["metrics-port", None, None, ("Serve Prometheus metrics at /metrics, and /healthz and /readyz, over plain "
                                      "HTTP on this port [default: off]."), _port],
        ["metrics-interface", None, "127.0.0.1", "The IPv4 address --metrics-port listens on."],
        ["log-format", None, "text", ("text (twistd's log: --logfile, --syslog...) or json: one JSON object per "
                                      "event, a line each, on standard output (for containers and log shippers).")],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.given: set[str] = set()
        self["port"] = self.defaultPort
        self["interface"] = DEFAULT_INTERFACE
        self["listen"] = []
        self["allowed-origins"] = []
        # A handler's help is its docstring, shared by every daemon: add this one's default.
        self.docs["port"] = f"The TCP port to listen on. [default: {self.defaultPort}]"
        self.docs["interface"] = f"The address to listen on. [default: {DEFAULT_INTERFACE}]"

    def opt_port(self, value: str) -> None:
        try:
            self["port"] = _port(value)
        except ValueError:
            raise usage.UsageError(f"--port must be an integer between 0 and 65535, not {value!r}")
        self.given.add("port")

    opt_port.__doc__ = "The TCP port to listen on."

    def opt_interface(self, value: str) -> None:
        self["interface"] = value
        self.given.add("interface")

    opt_interface.__doc__ = "The address to listen on."

    def opt_listen(self, description: str) -> None:
        self["listen"].append(checkListen("--listen", description))

    opt_listen.__doc__ = LISTEN_HELP

    def opt_allowed_origins(self, origin: str) -> None:
        try:
            self["allowed-origins"].append(checkOrigin(origin))
        except ValueError as e:
            raise usage.UsageError(f"--allowed-origins: {e}")

    opt_allowed_origins.__doc__ = (
        "A web origin (https://app.example.org) whose pages may open WebSockets and send POSTs here; "
        "repeatable; 'null' for pages without one. Requests whose Origin is not listed, nor this daemon's "
        "own, get 403; clients that send no Origin (not browsers) are unaffected, but a session cookie is "
        "only accepted with an allowed Origin [default: only the daemon's own origin]."
    )

    def postOptions(self) -> None:
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format must be text or json, not {self['log-format']!r}")
        if self["cert-dir"] is None:
            self["cert-dir"] = defaultCertDir()
        refuseWithListen("--listen", self["listen"], [name for name in ("port", "interface") if name in self.given])

    def limits(self) -> Limits:
        return Limits(
            maxMessageSize=self["max-message-size"], pingInterval=self["ping-interval"],
            maxConnections=self["max-connections"], maxConnectionsPerAddress=self["max-connections-per-address"],
            maxPublishRate=self.get("max-publish-rate", 0.0), publishBurst=self.get("publish-burst", 0),
        )


DEFAULT_QUEUE = "wss://localhost:8080"


class LinkOptions(usage.Options):
    """
    Options of a stage that connects to msgqueue (publisher, subscriber).
    """

    optParameters: OptionTable = [
        ["queue-user", None, None, f"User for msgqueue [default: $WSQUEUE_QUEUE_USER, else {DEMO_USER}]."],
        ["queue-password", None, None, "Password for msgqueue [default: $WSQUEUE_QUEUE_PASSWORD, else the demo password]."],
        ["ca", None, None, "CA certificate to verify msgqueue against [default: <cert-dir>/ca.crt when it exists, else the system's]."],
    ]
    optFlags: OptionTable = [
        ["insecure", None, "Do not verify msgqueue's certificate (as the Go system did; logged as a warning)."],
    ]

    def opt_queue(self, url: str) -> None:
        try:
            parseURL(url)
        except ValueError as e:
            raise usage.UsageError(f"--queue: {e}")
        self.setdefault("queues", []).append(url)

    opt_queue.__doc__ = (
        f"msgqueue's wss:// URL [default: {DEFAULT_QUEUE}]. Give it more than once for msgqueue daemons "
        "sharing one Redis store: the link goes to the first it can reach, and to the next when it is lost."
    )

    def postOptions(self) -> None:
        self["queues"] = self.get("queues") or [DEFAULT_QUEUE]
        # The first, as before --queue could be repeated (the all-in-one sets it).
        self["queue"] = self["queues"][0]
        if self["queue-user"] is None:
            self["queue-user"] = os.environ.get("WSQUEUE_QUEUE_USER", DEMO_USER)
        if self["queue-password"] is None:
            self["queue-password"] = os.environ.get("WSQUEUE_QUEUE_PASSWORD", DEMO_PASSWORD)


class PublicOptions(usage.Options):
    """
    Options of the daemons clients use (publisher, subscriber): browser sign-in
    with tickets and session cookies (see L{wsqueue.signin}), and topic permissions.
    """

    optParameters: OptionTable = [
        ["acl", None, None, (
            "File of topic permissions, one rule per line: USER publish|subscribe PATTERN ('*' as USER for "
            "everyone; patterns as news.* or news.>); anything not allowed is refused. Re-read when it "
            "changes [default: none: every user may publish and subscribe to everything]."
        )],
        ["ticket-secret-file", None, None, (
            "File holding the secret (at least 32 characters) that signs tickets and session cookies; give the "
            "publisher and the subscriber the same file so that each accepts what the other issued "
            "[default: a random secret per process]."
        )],
        ["ticket-ttl", None, 60.0, "How long a ticket from POST /ticket stays valid: 60, 90s, 5m.", _duration],
        ["session-ttl", None, 8 * 3600.0, "How long a session cookie from POST /login stays valid: 8h, 30m, 1d.",
         _duration],
    ]


class LinkedServerOptions(ServerOptions, LinkOptions):
    """
    Options of a stage that listens and links to msgqueue.
    """

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        LinkOptions.postOptions(self)


def defaultGroup(where: int | str) -> str:
    """
    A subscriber's consumer group when none is given: stable across restarts of the
    same daemon on the same host and port (or C{--listen}, see L{listenerName}),
    different between daemons.
    """
    return f"subscriber-{socket.gethostname()}-{where}"


def refuseWithListen(option: str, listen: Sequence[str], given: Sequence[str]) -> None:
    """
    A usage error when C{option} (C{--listen}, or the all-in-one's
    C{--publisher-listen}...) comes with the options it replaces (C{given}, without
    their dashes): one of them would be silently ignored.
    """
    if listen and given:
        names = " and ".join(f"--{name}" for name in given)
        raise usage.UsageError(f"{option} replaces {names}: give one or the other, not both")


# --- Twisted endpoint descriptions, as C{--listen} takes them --------------------------

Description = list[tuple[str | None, str]]
"""A description split at its colons: C{(None, value)} for a positional argument,
C{(name, value)} for C{name=value}; the first is the endpoint type."""


def splitDescription(description: str) -> Description:
    """
    Split an endpoint description as L{twisted.internet.endpoints.serverFromString}
    reads it: at each colon; C{name=value} is a keyword argument (a value may hold
    more C{=}); a backslash makes the next character literal.

    Twisted has no public function for this; wsqueue needs it to take its own TLS
    arguments out of a description before Twisted reads the rest.
    """
    parts: Description = []
    name: str | None = None
    current: list[str] = []
    characters = iter(description)
    for character in characters:
        if character == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise ValueError("ends with a lone backslash")
            current.append(escaped)
        elif character == ":":
            parts.append((name, "".join(current)))
            name, current = None, []
        elif character == "=" and name is None:
            name, current = "".join(current), []
        else:
            current.append(character)
    parts.append((name, "".join(current)))
    return parts


def _quote(text: str) -> str:
    return re.sub(r"([\\:=])", r"\\\1", text)


def joinDescription(parts: Description) -> str:
    """
    The description that L{splitDescription} splits into C{parts}.
    """
    return ":".join(_quote(value) if name is None else f"{_quote(name)}={_quote(value)}" for name, value in parts)


def endpointType(parts: Description) -> str:
    """
    The endpoint type of a split description, lower-cased (C{""} when it has none).
    """
    name, value = parts[0]
    return value.lower() if name is None else ""


def checkListen(option: str, description: str) -> str:
    """
    C{description} when it is a description C{option} may take, else a usage error
    saying why.  Only its form is checked here; whether Twisted knows the endpoint
    type and its arguments is checked at start-up (that takes the reactor).
    """
    try:
        parts = splitDescription(description)
    except ValueError as e:
        raise usage.UsageError(f"{option} {description!r}: {e}")
    kind = endpointType(parts)
    if not kind:
        raise usage.UsageError(f"{option} {description!r}: must start with an endpoint type (ssl:, tcp:, unix:, systemd:, tls:...)")
    if kind == TLS_PREFIX:
        inner = endpointType(parts[1:]) if len(parts) > 1 else ""
        if not inner:
            raise usage.UsageError(f"{option} {description!r}: tls: must wrap a description, e.g. tls:unix:/run/wsqueue.sock")
        if inner in (TLS_PREFIX, "ssl"):
            raise usage.UsageError(f"{option} {description!r}: {inner}: is TLS already; tls: would wrap it twice")
    return description


def listenPort(description: str) -> int | None:
    """
    The port a C{tcp:}, C{ssl:} or C{tls:tcp:} description names, else L{None}.
    """
    try:
        parts = splitDescription(description)
    except ValueError:
        return None
    if endpointType(parts) == TLS_PREFIX:
        parts = parts[1:]
    if endpointType(parts) not in ("tcp", "ssl", "tcp6") or len(parts) < 2:
        return None
    name, port = parts[1]
    if name is not None:
        port = {name: value for name, value in parts[1:] if name is not None}.get("port", "")
    return int(port) if port.isdigit() else None


def listenerName(port: int, listen: Sequence[str]) -> int | str:
    """
    What names a subscriber's listener in its default group (L{defaultGroup}): its
    port; with C{--listen}, the first description's port (the same group as with
    C{--port}), else that description with what a topic cannot hold replaced
    (C{unix_/run/wsqueue.sock}).
    """
    if not listen:
        return port
    found = listenPort(listen[0])
    if found is not None:
        return found
    return re.sub(r"[^A-Za-z0-9._/=-]+", "_", listen[0])[:128]


def buildAuthenticator(options: ServerOptions, reactor, log):
    """
    The daemon's authenticator; warns when only the demo account is accepted.

    One per daemon: the all-in-one daemon's stages share it (and its warning).
    """
    existing = getattr(options, "authenticator", None)
    if existing is not None:
        return existing
    if options["credentials"] is None:
        log.warn(
            # The demo password is public (README), but a log is never the place for one.
            "no --credentials file: accepting only the demo account {user} (see --credentials to set users)",
            user=DEMO_USER,
        )
    try:
        options.authenticator = makeAuthenticator(options["credentials"], reactor)
    except (CredentialsFileError, OSError) as e:
        raise StartupError(str(e))
    return options.authenticator


def buildSignIn(options, reactor, log) -> tuple[Tickets, Sessions]:
    """
    The daemon's tickets and sessions, signed with C{--ticket-secret-file}'s secret.

    One pair per daemon: the all-in-one daemon's publisher and subscriber share it,
    and so its memory of used tickets.
    """
    existing = getattr(options, "signIn", None)
    if existing is not None:
        return existing
    try:
        secret = loadSecret(options["ticket-secret-file"])
    except SecretError as e:
        raise StartupError(str(e))
    if options["ticket-secret-file"] is None:
        log.info("no --ticket-secret-file: tickets and session cookies are valid only on this daemon")
    authenticator = buildAuthenticator(options, reactor, log)
    options.signIn = (
        Tickets(secret, reactor, options["ticket-ttl"]),
        Sessions(secret, reactor, options["session-ttl"], authenticator.stampOf),
    )
    return options.signIn


def buildMetrics(options) -> DaemonMetrics | None:
    """
    The daemon's metrics (C{--metrics-port}), or L{None} without it; one per daemon.
    """
    if options.get("metrics-port") is None:
        return None
    existing = getattr(options, "metrics", None)
    if existing is None:
        existing = options.metrics = DaemonMetrics()
    return existing


def buildACL(options, reactor, log) -> ACLFile | None:
    """
    The daemon's topic permissions (C{--acl}), or L{None} without the option; one
    per daemon (the all-in-one daemon's publisher and subscriber share it).
    """
    if options["acl"] is None:
        return None
    existing = getattr(options, "aclFile", None)
    if existing is not None:
        return existing
    try:
        options.aclFile = ACLFile(options["acl"], reactor)
    except ACLError as e:
        raise StartupError(str(e))
    return options.aclFile


def buildLink(options, reactor, path: str, owner, log, retryPolicy=None, startDelay: float = 0.0) -> QueueLink:
    """
    The reconnecting link to msgqueue at C{path} (with its query).
    """
    caPath = options["ca"] or defaultCAPath(options["cert-dir"])
    if options["insecure"]:
        log.warn("--insecure: msgqueue's certificate is NOT verified")
    try:
        targets = [
            QueueTarget(
                clientEndpoint(reactor, queue, caPath, options["insecure"], options.get("queue-address")),
                queue.rstrip("/") + path,
            )
            for queue in options["queues"]
        ]
    except TLSConfigurationError as e:
        raise StartupError(str(e))
    ready = readyFileOf(options)
    ready.expectLink(*(target.url for target in targets))
    first, *alternatives = targets
    return QueueLink(
        reactor, first.endpoint, first.url, options["queue-user"], options["queue-password"],
        owner, options.limits(), retryPolicy=retryPolicy, startDelay=startDelay, observer=ready,
        alternatives=alternatives,
    )
