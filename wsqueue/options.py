# -*- test-case-name: tests.test_options -*-
"""
Command-line options shared by the daemons, and what they turn into.

The option names are a contract: tools outside the project (the benchmark, init
scripts) start the daemons with them.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.python import usage

from wsqueue.auth import DEMO_PASSWORD, DEMO_USER, BasicAuthenticator, CredentialsFileError, makeAuthenticator
from wsqueue.link import QueueLink
from wsqueue.readiness import readyFileOf
from wsqueue.server import Limits
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


class ServerOptions(usage.Options):
    """
    Options every daemon has: where it listens, its certificate, its users, its limits.
    """

    defaultPort = 8080
    authenticator: BasicAuthenticator | None = None
    """The daemon's authenticator once built (see L{buildAuthenticator})."""

    optParameters: OptionTable = [
        ["interface", None, "127.0.0.1", "The address to listen on."],
        ["cert-dir", None, None, "Folder holding server.crt and server.key [default: $WS_CERT_DIR, else ./certs]."],
        ["credentials", None, None, "Credentials file (see wsqueue-passwd) [default: only the demo account hello/test]."],
        ["max-message-size", None, 1024 * 1024, "Largest message a client may send, in bytes; bigger ones close with 1009.", _positiveInt],
        ["ping-interval", None, 20.0, "Seconds between WebSocket pings; a peer silent that long after a ping is dropped.", _positiveFloat],
        ["ready-file", None, None, READY_FILE_HELP],
        ["shutdown-timeout", None, 10.0, "Seconds a stop may take to finish what is in flight before it goes on regardless.", _positiveFloat],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = self.defaultPort
        # A handler's help is its docstring, shared by every daemon: add this one's default.
        self.docs["port"] = f"The TCP port to listen on. [default: {self.defaultPort}]"

    def opt_port(self, value: str) -> None:
        try:
            self["port"] = _port(value)
        except ValueError:
            raise usage.UsageError(f"--port must be an integer between 0 and 65535, not {value!r}")

    opt_port.__doc__ = "The TCP port to listen on."

    def postOptions(self) -> None:
        if self["cert-dir"] is None:
            self["cert-dir"] = defaultCertDir()

    def limits(self) -> Limits:
        return Limits(maxMessageSize=self["max-message-size"], pingInterval=self["ping-interval"])


class LinkOptions(usage.Options):
    """
    Options of a stage that connects to msgqueue (publisher, subscriber).
    """

    optParameters: OptionTable = [
        ["queue", None, "wss://localhost:8080", "msgqueue's wss:// URL."],
        ["queue-user", None, None, f"User for msgqueue [default: $WSQUEUE_QUEUE_USER, else {DEMO_USER}]."],
        ["queue-password", None, None, "Password for msgqueue [default: $WSQUEUE_QUEUE_PASSWORD, else the demo password]."],
        ["ca", None, None, "CA certificate to verify msgqueue against [default: <cert-dir>/ca.crt when it exists, else the system's]."],
    ]
    optFlags: OptionTable = [
        ["insecure", None, "Do not verify msgqueue's certificate (as the Go system did; logged as a warning)."],
    ]

    def postOptions(self) -> None:
        try:
            parseURL(self["queue"])
        except ValueError as e:
            raise usage.UsageError(f"--queue: {e}")
        if self["queue-user"] is None:
            self["queue-user"] = os.environ.get("WSQUEUE_QUEUE_USER", DEMO_USER)
        if self["queue-password"] is None:
            self["queue-password"] = os.environ.get("WSQUEUE_QUEUE_PASSWORD", DEMO_PASSWORD)


class LinkedServerOptions(ServerOptions, LinkOptions):
    """
    Options of a stage that listens and links to msgqueue.
    """

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        LinkOptions.postOptions(self)


def defaultGroup(port: int) -> str:
    """
    A subscriber's consumer group when none is given: stable across restarts of the
    same daemon on the same host and port, different between daemons.
    """
    return f"subscriber-{socket.gethostname()}-{port}"


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
            "no --credentials file: accepting only the demo account {user}/{password}",
            user=DEMO_USER, password=DEMO_PASSWORD,
        )
    try:
        options.authenticator = makeAuthenticator(options["credentials"], reactor)
    except (CredentialsFileError, OSError) as e:
        raise StartupError(str(e))
    return options.authenticator


def buildLink(options, reactor, path: str, owner, log, retryPolicy=None, startDelay: float = 0.0) -> QueueLink:
    """
    The reconnecting link to msgqueue at C{path} (with its query).
    """
    caPath = options["ca"] or defaultCAPath(options["cert-dir"])
    if options["insecure"]:
        log.warn("--insecure: msgqueue's certificate is NOT verified")
    try:
        endpoint = clientEndpoint(reactor, options["queue"], caPath, options["insecure"], options.get("queue-address"))
    except TLSConfigurationError as e:
        raise StartupError(str(e))
    url = options["queue"].rstrip("/") + path
    ready = readyFileOf(options)
    ready.expectLink(url)
    return QueueLink(
        reactor, endpoint, url, options["queue-user"], options["queue-password"],
        owner, options.limits(), retryPolicy=retryPolicy, startDelay=startDelay, observer=ready,
    )
