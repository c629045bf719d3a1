# -*- test-case-name: tests.test_compat -*-
"""
Every place where wsqueue reads or writes private or undocumented state of Twisted
or Autobahn, in one module.

Each access here was checked against Twisted 26.10 and Autobahn 26.10 (L{CHECKED_AGAINST});
C{setup.cfg} pins both below their next major version.  Each has a test in
C{tests.test_compat} on a real connection that fails, naming the library and the name
here, when a release changes what it relies on; C{./dev test-latest} runs the suite
against the newest releases to see such a change before users do.  What can be checked
without a connection (class attributes and methods) is checked when this module is
imported (L{_checkLibraries}): wsqueue refuses to start rather than run with a
safeguard silently off.

No txaio internals are used: Autobahn's timers are reached through txaio's public
batched-timer interface (C{call_later}), via Autobahn's private factory attribute.

Two kinds of access live here:
  - functions called once per connection, or on rare paths (handshake, pause, close);
  - for the per-message hot path, functions written as methods and bound on
    L{wsqueue.frames.WholeFrames} (as cheap as methods defined there), and the
    attribute names that the hot path still reads inline, listed in
    L{AUTOBAHN_FRAME_STATE}.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.application.internet import ClientService, StreamServerEndpointService
from twisted.internet.abstract import FileDescriptor
from twisted.logger import FilteringLogObserver, Logger, LogLevel, LogLevelFilterPredicate, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

CHECKED_AGAINST = "Twisted 26.10, Autobahn 26.10"
"""The releases every access in this module was read against and tested with."""


# --- Autobahn: the frame reader's and writer's state (hot path) -----------------------

AUTOBAHN_FRAME_STATE = (
    "state",
    "data",
    "current_frame",
    "inside_message",
    "_perMessageCompress",
    "send_queue",
    "logOctets",
    "logFrames",
    "maxMessagePayloadSize",
)
"""
The attributes of an Autobahn protocol (C{autobahn/websocket/protocol.py}) that
L{wsqueue.frames.WholeFrames} reads on every message, inline or through
L{autobahnBetweenMessages} and L{sendDataWithoutLog}:

  - C{state} (and C{STATE_OPEN}): the connection's state; C{STATE_OPEN} once the
    opening handshake is done;
  - C{data}: the bytes Autobahn has received and not parsed yet (C{b""} between frames);
  - C{current_frame}: the header of a frame whose payload is still arriving, else L{None};
  - C{inside_message}: true between the first and the last frame of a fragmented message;
  - C{_perMessageCompress}: the negotiated compression extension, L{None} when none
    (read inline by C{WholeFrames.sendText});
  - C{send_queue}: Autobahn's queue of writes it delays to a later reactor turn
    (C{sendData(sync=True)} or with a C{chopsize}); empty otherwise;
  - C{logOctets}, C{logFrames}, C{maxMessagePayloadSize}: the protocol options of
    the same names (C{setProtocolOptions}), copied onto the protocol.

All are instance attributes set when the connection is made, so they are checked on
real connections by C{tests.test_compat.AutobahnFrameStateTests}, not at import.
"""


def autobahnBetweenMessages(self) -> bool:
    """
    Whether Autobahn's reader stands between two messages on an open, plain
    connection, so that wsqueue may read whole frames itself: nothing buffered, no
    frame or fragmented message started, no compression, no octet or frame logging.

    Written as a method: L{wsqueue.frames.WholeFrames} binds it as
    C{_readsFramesItself} (once per read of the socket).  Reads the attributes named
    in L{AUTOBAHN_FRAME_STATE} (Autobahn 26.10).
    """
    return (
        self.state == self.STATE_OPEN
        and not self.data
        and self.current_frame is None
        and not self.inside_message
        and self._perMessageCompress is None
        and not self.logOctets
        and not self.logFrames
    )


def sendDataWithoutLog(self, data: bytes) -> None:
    """
    Write complete frames on an open connection that has no compression extension.

    This is what Autobahn's C{sendData} does, less the debug-log call whose
    arguments it formats on every write even with debug logging off; that was
    the largest cost of fanning one message out to thousands of clients.
    Autobahn's own queue of timed writes (C{send_queue}, Autobahn 26.10) goes first
    if it holds anything.

    Written as a method: L{wsqueue.frames.WholeFrames} binds it as C{sendFrames}.
    """
    if self.send_queue:
        self.sendData(data)
    else:
        self.transport.write(data)


AUTOBAHN_WRITE_METHOD = "sendData"
"""
The Autobahn protocol method (C{WebSocketProtocol.sendData}, Autobahn 26.10) that
every one of Autobahn's writes goes through: the opening handshake's answer, pongs,
close frames, messages.  L{wsqueue.server.StageServerProtocol} overrides it to count
what waits for a slow peer; a write that bypassed it would escape that bound.
"""


# --- Autobahn: the opening handshake ----------------------------------------------------

AUTOBAHN_HANDSHAKE_LEFTOVERS = (
    "http_request_data", "http_response_data", "http_headers", "http_status_line",
    "http_request_uri", "http_request_path", "http_request_params",
    "websocket_extensions", "websocket_protocols",
)
"""
What an Autobahn 26.10 server protocol keeps of the opening handshake as instance
attributes and never reads once the connection is open.
"""


def forgetHandshake(protocol) -> None:
    """
    Drop what Autobahn kept of the opening handshake (L{AUTOBAHN_HANDSHAKE_LEFTOVERS}):
    about 2 KB of an idle connection's 35 (measured with 2,000 connections).  Called
    in C{onOpen}.
    """
    attributes = protocol.__dict__
    for name in AUTOBAHN_HANDSHAKE_LEFTOVERS:
        attributes.pop(name, None)


def handshakeStatusLine(protocol) -> str | None:
    """
    The status line of the server's answer to a client's opening handshake
    (C{"HTTP/1.1 401 Unauthorized"}), or L{None} when no answer was read.

    Autobahn 26.10 keeps it in C{http_status_line} and passes nothing but a reason to
    C{onClose}; the link and C{wsqueue-client} read the status from it to say why a
    handshake failed (a 401 is fatal for a link).
    """
    return getattr(protocol, "http_status_line", None)


def notCleanReason(protocol) -> str | None:
    """
    Autobahn's own account of why a connection did not close cleanly (a timeout, a
    dropped TCP connection), from C{wasNotCleanReason} (Autobahn 26.10), or L{None}.
    """
    return getattr(protocol, "wasNotCleanReason", None)


def cancelCloseHandshakeTimer(protocol) -> None:
    """
    Cancel the closing handshake's timeout of a connection that is gone.

    Autobahn cancels C{closeHandshakeTimeoutCall} when the peer's close frame
    arrives, but not when the connection is lost first (a peer that closes TCP
    right after its close frame, or drops): the timer then stays scheduled for up
    to the close timeout after the connection is gone, and fires on a dead one.
    """
    call = getattr(protocol, "closeHandshakeTimeoutCall", None)
    if call is not None:
        call.cancel()
        protocol.closeHandshakeTimeoutCall = None


def sendCloseWithAnyCode(protocol, code: int, reasonUtf8: bytes) -> None:
    """
    Start the closing handshake with C{code}, which Autobahn's public C{sendClose}
    refuses unless it is 1000 or 3000-4999 (RFC 6455 gives 1001 to a server going
    away and 1008 to a policy violation).  Uses C{sendCloseFrame(code, reasonUtf8,
    isReply)} (Autobahn 26.10), which C{sendClose} calls after its checks.
    """
    protocol.sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=False)


def takeHandshakeData(protocol) -> bytes:
    """
    What a server protocol has received and not yet processed while its opening
    handshake is under way (Autobahn 26.10 buffers it in C{data}), leaving the
    buffer empty: when a connection turns out to be a plain HTTP request, it is
    handed with these bytes to twisted.web (L{wsqueue.server.StageServerProtocol}).
    """
    data = protocol.data
    protocol.data = b""
    return bytes(data)


def cancelOpenHandshakeTimer(protocol) -> None:
    """
    Cancel the opening handshake's timeout (Autobahn 26.10's
    C{openHandshakeTimeoutCall}) of a connection handed to twisted.web, which has
    timeouts of its own: otherwise Autobahn would drop a plain HTTP connection
    (a slow C{POST /publish} waiting for msgqueue) a few seconds after it began.
    """
    call = getattr(protocol, "openHandshakeTimeoutCall", None)
    if call is not None:
        call.cancel()
        protocol.openHandshakeTimeoutCall = None


# --- Autobahn: automatic pings ----------------------------------------------------------

AUTOBAHN_AUTOPING_STATE = ("autoPingPendingCall", "autoPingTimeoutCall", "autoPingPending")
"""
Autobahn 26.10's auto-ping state on a protocol: the timer that sends the next ping
(C{autoPingPendingCall}), the timer that drops a peer whose pong is late
(C{autoPingTimeoutCall}), and the payload of the ping waiting for its pong
(C{autoPingPending}; a pong that does not match it schedules nothing).
"""


def suspendAutoPing(protocol) -> None:
    """
    Stop Autobahn's automatic pings on C{protocol}: no ping goes out
    (C{autoPingPendingCall}) and none is waited for (C{autoPingTimeoutCall});
    forgetting C{autoPingPending} makes a pong that was already read in this chunk of
    data schedule nothing either.  Autobahn has no public interface for this.
    """
    for name in ("autoPingPendingCall", "autoPingTimeoutCall"):
        call = getattr(protocol, name, None)
        if call is not None:
            call.cancel()
            setattr(protocol, name, None)
    protocol.autoPingPending = None


def restartAutoPing(protocol) -> None:
    """
    Start Autobahn's automatic pings again, the next one a ping interval from now:
    what Autobahn 26.10 does once the opening handshake is done (and after each pong),
    with its factory's private batched timer (C{factory._batched_timer}, txaio's
    public C{call_later} interface) and its private C{_sendAutoPing}.
    """
    if (
        protocol.state == protocol.STATE_OPEN
        and protocol.autoPingInterval
        and protocol.autoPingPendingCall is None
    ):
        protocol.autoPingPendingCall = protocol.factory._batched_timer.call_later(
            protocol.autoPingInterval, protocol._sendAutoPing
        )


# --- Twisted: TLS and TCP transports ------------------------------------------------------

UNBUFFERED_TLS_PROTOCOL = TLSMemoryBIOProtocol
"""
The TLS transport class whose writes go straight to OpenSSL and the socket.

Twisted 26.10's L{TLSMemoryBIOFactory} builds C{BufferingTLSTransport}, a subclass
that gathers small writes and sends them a reactor turn later, with a timer per
connection; setting a factory's C{protocol} to its base class, L{TLSMemoryBIOProtocol},
gives the unbuffered transport (L{wsqueue.tls}).  Neither the choice nor the
difference is documented.
"""


def tcpUnderTLS(transport):
    """
    The TCP transport under a TLS transport (Twisted's C{ProtocolWrapper.transport}),
    else L{None}.
    """
    return getattr(transport, "transport", None)


def unsentBytes(connection) -> int | None:
    """
    How many bytes wait for the peer beyond the point where the connection's
    transport (TCP, under TLS) pauses its producer, or L{None} when it does not say.
    Negative while the transport is below that point.

    Twisted 26.10's L{FileDescriptor} keeps what the kernel did not take yet in
    C{dataBuffer} (from C{offset}) plus C{_tempDataBuffer} (C{_tempDataLen} bytes),
    and pauses its producer past C{bufferSize}; it has no public accessor for them,
    so this reads them defensively (L{None} for other transports: UNIX sockets, test
    transports).  Called for every write to a server's peer (the slow-consumer bound).
    """
    tcp: Any = getattr(connection.transport, "transport", None)  # any object, or None: read defensively
    try:
        return len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen - tcp.bufferSize
    except (AttributeError, TypeError):
        return None


def setNoDelay(transport) -> None:
    """
    Turn off Nagle's algorithm on a connection's TCP socket (under TLS too).

    Autobahn means to (its C{tcpNoDelay} option) but asks before the option is set on
    the protocol and swallows the C{AttributeError}, so without this a small frame
    waits for the peer's delayed TCP acknowledgement, up to 40 ms on Linux, whenever
    the peer has nothing to send back.  Under TLS, C{setTcpNoDelay} reaches the TCP
    transport through Twisted's C{ProtocolWrapper.__getattr__}, which forwards every
    unknown attribute to the wrapped transport (Twisted 26.10; undocumented).
    """
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass  # not TCP (a UNIX socket, a test's transport)


# --- Twisted: services --------------------------------------------------------------------


def raiseListenErrors(service: StreamServerEndpointService) -> StreamServerEndpointService:
    """
    Make C{service} raise a failure to listen (a port in use) from
    C{privilegedStartService}, so that start-up aborts, instead of logging it and
    running without a listener; return it.  This is what C{strports.service} does,
    through the private C{_raiseSynchronously} (Twisted 26.10).
    """
    service._raiseSynchronously = True
    return service


_warningsAndAbove = FilteringLogObserver(globalLogPublisher, [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])


class QuietClientService(ClientService):
    """
    A L{ClientService} that does not log each retry (its "Scheduling retry" line),
    only warnings and above.  C{_log} is the class attribute L{ClientService} hands
    to its state machine as its logger (Twisted 26.10), the only way to change it.
    """

    _log = Logger(observer=_warningsAndAbove)


# --- Checked at import ----------------------------------------------------------------------

_CLASS_LEVEL = (
    ("Twisted", FileDescriptor, ("dataBuffer", "offset", "bufferSize"), "unsentBytes"),
    ("Twisted", TLSMemoryBIOFactory, ("protocol",), "UNBUFFERED_TLS_PROTOCOL"),
    ("Twisted", StreamServerEndpointService, ("_raiseSynchronously",), "raiseListenErrors"),
    ("Twisted", ClientService, ("_log",), "QuietClientService"),
    ("Autobahn", WebSocketProtocol, ("STATE_OPEN", AUTOBAHN_WRITE_METHOD), "AUTOBAHN_WRITE_METHOD"),
    ("Autobahn", WebSocketProtocol, ("sendCloseFrame",), "sendCloseWithAnyCode"),
    ("Autobahn", WebSocketProtocol, ("_sendAutoPing",), "restartAutoPing"),
)


class LibraryChanged(ImportError):
    """
    A library no longer has what L{wsqueue._compat} relies on.
    """


def _checkLibraries() -> None:
    for library, cls, names, fence in _CLASS_LEVEL:
        missing = [name for name in names if not hasattr(cls, name)]
        if missing:
            raise LibraryChanged(
                f"{library}'s {cls.__module__}.{cls.__qualname__} no longer has {', '.join(missing)}, which "
                f"wsqueue._compat.{fence} relies on (checked against {CHECKED_AGAINST}); "
                f"pin {library} to a tested release, or update wsqueue._compat"
            )
    if not (isinstance(UNBUFFERED_TLS_PROTOCOL, type) and issubclass(TLSMemoryBIOFactory.protocol, UNBUFFERED_TLS_PROTOCOL)):
        raise LibraryChanged(
            "Twisted's TLSMemoryBIOFactory no longer builds TLSMemoryBIOProtocol transports, which "
            f"wsqueue._compat.UNBUFFERED_TLS_PROTOCOL relies on (checked against {CHECKED_AGAINST})"
        )


_checkLibraries()
