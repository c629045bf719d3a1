# -*- test-case-name: tests.test_listen -*-
"""
Where a daemon listens: C{--port}/C{--interface} (TLS), or C{--listen} Twisted
endpoint descriptions.

Twisted's C{serverFromString} builds every endpoint, with one exception: TLS.
Twisted's C{ssl:} parser makes its own TLS options, which offer no ALPN, and so
would abort the handshake of every browser and of curl (see
L{wsqueue.tls.ALPN_PROTOCOLS}).  So an C{ssl:} description is read as the C{tcp:}
one it contains, and a C{tls:} prefix takes any description; both are then served
with wsqueue's own TLS options (L{wsqueue.tls.tlsServerEndpoint}), from
C{--cert-dir} unless the description names C{certKey=}/C{privateKey=} files.
Everything else (C{tcp:}, C{unix:}, C{systemd:}, any endpoint plugin) serves plain
C{ws://}, for a TLS-terminating proxy or local clients, and says so in a warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from zope.interface import implementer

from wsqueue import tls
from wsqueue.options import (
    TLS_PREFIX,
    Description,
    StartupError,
    endpointType,
    joinDescription,
    splitDescription,
)

log = Logger()

TLS_FILE_ARGUMENTS = ("certKey", "privateKey", "extraCertChain")
"""The arguments of Twisted's C{ssl:} descriptions that wsqueue reads itself (and
also takes after C{tls:}): the certificate, its key, more chain certificates."""

REFUSED_TLS_ARGUMENTS = ("sslmethod", "dhParameters")
"""Twisted's C{ssl:} arguments that would change wsqueue's TLS settings: refused,
not silently ignored."""


@dataclass(frozen=True)
class Listener:
    """
    One place a stage listens.

    @ivar endpoint: where, ready for C{listen}.
    @ivar secure: whether it serves TLS (C{wss://}) or plain C{ws://}.
    @ivar description: how it was given: the C{--listen} description, or
        C{interface:port}; for messages.
    """

    endpoint: IStreamServerEndpoint
    secure: bool
    description: str


def defaultListener(reactor, port: int, interface: str, certDir: str) -> Listener:
    """
    The listener of a daemon not given C{--listen}: TLS on C{interface} and C{port}.
    """
    return Listener(tls.serverEndpoint(reactor, port, interface, certDir), True, f"{interface}:{port}")


def parseListener(reactor, description: str, certDir: str) -> Listener:
    """
    The listener that C{description} (a C{--listen} value) names, or a
    L{StartupError} saying in one line what is wrong with it.
    """
    try:
        parts = splitDescription(description)
    except ValueError as e:
        raise StartupError(f"--listen {description}: {e}")
    kind = endpointType(parts)
    if kind == TLS_PREFIX:
        return _secureListener(reactor, description, parts[1:], certDir)
    if kind == "ssl":
        positional = [value for name, value in parts[1:] if name is None]
        if len(positional) + sum(name == "port" for name, _ in parts) != 1:
            raise StartupError(
                f"--listen {description}: ssl: takes a port, then name=value arguments "
                f"(interface=, backlog=, {'=, '.join(TLS_FILE_ARGUMENTS)}=)"
            )
        return _secureListener(reactor, description, [(None, "tcp"), *parts[1:]], certDir)
    endpoint = _endpointFrom(reactor, description, description)
    return Listener(_PlainEndpoint(endpoint), False, description)


def _secureListener(reactor, description: str, parts: Description, certDir: str) -> Listener:
    """
    The endpoint of C{parts} (less wsqueue's TLS arguments) serving TLS with
    wsqueue's options.
    """
    for name, _ in parts:
        if name in REFUSED_TLS_ARGUMENTS:
            raise StartupError(f"--listen {description}: {name}= is not supported: wsqueue's own TLS settings apply")
    files = {name: value for name, value in parts if name is not None and name in TLS_FILE_ARGUMENTS}
    rest = [(name, value) for name, value in parts if name not in TLS_FILE_ARGUMENTS]
    try:
        options = _tlsOptions(files, certDir)
    except tls.TLSConfigurationError as e:
        raise StartupError(f"--listen {description}: {e}")
    return Listener(tls.tlsServerEndpoint(_endpointFrom(reactor, joinDescription(rest), description), options), True, description)


def _tlsOptions(files: dict[str, str], certDir: str):
    """
    wsqueue's TLS options with C{--cert-dir}'s certificate, or with the files a
    description names.  Given only one of C{certKey=} and C{privateKey=}, that file
    holds both (as Twisted reads C{privateKey=} alone).
    """
    certPath = files.get("certKey") or files.get("privateKey")
    keyPath = files.get("privateKey") or files.get("certKey")
    chainPath = files.get("extraCertChain")
    if certPath is None or keyPath is None:
        if chainPath is not None:
            raise tls.TLSConfigurationError(
                "extraCertChain= needs certKey= or privateKey= (--cert-dir's server.crt holds its own chain)"
            )
        return tls.serverOptions(certDir)
    return tls.serverOptionsFromFiles(certPath, keyPath, chainPath)


def _endpointFrom(reactor, text: str, description: str) -> IStreamServerEndpoint:
    """
    Twisted's endpoint for C{text}, or a L{StartupError} naming C{description}
    (what the user gave) and why.
    """
    try:
        return serverFromString(reactor, text)
    # Any endpoint plugin may parse a description, and raise anything doing so.
    except Exception as e:  # noqa: BLE001
        raise StartupError(f"--listen {description}: {_reason(endpointType(splitDescription(text)), e)}")


def _reason(kind: str, error: Exception) -> str:
    if kind == "systemd" and isinstance(error, (IndexError, KeyError)):
        return (
            "no such socket was inherited from systemd (the LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES that a "
            ".socket unit sets are missing, or name other sockets; run twistd -n under it)"
        )
    if isinstance(error, TypeError):
        return f"wrong arguments for {kind}: ({error})"
    return str(error) or type(error).__name__


@implementer(IStreamServerEndpoint)
class _PlainEndpoint:
    """
    A listener without TLS whose connections are wrapped as TLS's are, in a
    L{ProtocolWrapper<twisted.protocols.policies.ProtocolWrapper>} over the socket's
    transport, so that what measures a slow peer's backlog
    (L{wsqueue._compat.unsentBytes}, the slow-consumer bound) finds the socket's
    transport where it does under TLS: without it, that bound would be off.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint

    def listen(self, factory: IProtocolFactory) -> Deferred:
        return self._endpoint.listen(WrappingFactory(factory))


def listenersOf(options, reactor, stage: str, port: int | None = None, listen: Sequence[str] | None = None) -> list[Listener]:
    """
    A stage's listeners: one per C{--listen} description (C{listen} overrides
    the option, for the all-in-one daemon's stages), else TLS on C{--port} (or
    C{port}) and C{--interface}.  Warns about each listener without TLS.
    """
    descriptions = options["listen"] if listen is None else listen
    if not descriptions:
        return [defaultListener(reactor, options["port"] if port is None else port, options["interface"], options["cert-dir"])]
    listeners = [parseListener(reactor, description, options["cert-dir"]) for description in descriptions]
    for listener in listeners:
        if not listener.secure:
            log.warn(
                "{stage}: --listen {description} serves plain ws:// WITHOUT TLS: passwords and messages "
                "travel in clear unless a TLS-terminating proxy is in front or the clients are local",
                stage=stage, description=listener.description,
            )
    return listeners


def describeAddress(address: IAddress, secure: bool) -> tuple[str, dict[str, Any]]:
    """
    Where a listener listens, for its "listening" log line (C{wss://host:port},
    C{ws://host:port}, C{unix:PATH}, C{tls:unix:PATH}) and for its readiness event's
    fields (C{host} and C{port}; C{path} for a UNIX socket; else C{address}).
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        scheme = "wss" if secure else "ws"
        return f"{scheme}://{address.host}:{address.port}", {"host": address.host, "port": address.port}
    prefix = "tls:" if secure else ""
    if isinstance(address, UNIXAddress):
        path = "" if address.name is None else os.fsdecode(address.name)
        return f"{prefix}unix:{path}", {"path": path}
    return f"{prefix}{address}", {"address": str(address)}
