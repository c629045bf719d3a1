# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsqueue}: all three stages in one process, for the quick start.

The stages are still joined by real C{wss://} connections over loopback, exactly as
when they run as separate daemons.
"""

from __future__ import annotations

import secrets

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from wsqueue.auth import INTERNAL_USER
from wsqueue.options import OptionTable, StartupError, _port, buildAuthenticator
from wsqueue.tap import msgqueue, publisher, subscriber
from wsqueue.tap._common import StopInOrder, daemonService
from wsqueue.tls import TLSConfigurationError, certificateNames

log = Logger()

NOT_FOR_ALL_IN_ONE = ("port", "queue", "queue-user", "queue-password")
"""The separate daemons' options that the all-in-one sets itself."""


class Options(publisher.Options, subscriber.Options, msgqueue.Options):
    synopsis = "[options]"
    longdesc = (
        "msgqueue, publisher and subscriber in one process, joined over wss:// on loopback: "
        "the stages connect to this process's msgqueue with an account of their own."
    )
    optParameters: OptionTable = [
        ["msgqueue-port", None, 8080, "msgqueue's port.", _port],
        ["publisher-port", None, 8081, "publisher's port.", _port],
        ["subscriber-port", None, 8082, "subscriber's port.", _port],
    ]

    def __init__(self) -> None:
        super().__init__()
        # Options of the separate daemons that mean nothing here: neither listed by
        # --help nor accepted (getopt refuses what longOpt does not name).
        self.longOpt = [option for option in self.longOpt if option.rstrip("=") not in NOT_FOR_ALL_IN_ONE]

    def postOptions(self) -> None:
        self["port"] = self["subscriber-port"]
        subscriber.Options.postOptions(self)
        msgqueue.Options.postOptions(self)
        host = "localhost" if self["interface"] in ("127.0.0.1", "0.0.0.0", "::", "::1", "") else self["interface"]
        self["queue-address"] = host
        self["queue"] = queueURL(host, self["msgqueue-port"])
        # The stages reach their own msgqueue with an account of their own, so that
        # any credentials file works (and the demo account may be absent from it).
        self["queue-user"] = INTERNAL_USER
        self["queue-password"] = secrets.token_urlsafe(32)
        if self["msgqueue-port"] == 0:
            raise usage.UsageError("--msgqueue-port must be a fixed port: the other stages connect to it")


def queueURL(host: str, port: int) -> str:
    """
    The URL the stages reach msgqueue at (an IPv6 address bracketed).
    """
    return f"wss://[{host}]:{port}" if ":" in host else f"wss://{host}:{port}"


def verifyUnderCertificateName(options: Options) -> None:
    """
    Have the stages verify their own msgqueue under a name its certificate carries.

    They connect to C{queue-address} (loopback, or the listening interface); a
    certificate made for the daemon's public name (C{wsqueue-certs --host
    mq.example.org}, or one from a public CA) does not name that address, and host
    name verification would refuse every link.  So when it does not, the link
    verifies under the certificate's first name and still connects to the address.
    """
    try:
        names = certificateNames(options["cert-dir"])
    except TLSConfigurationError as e:
        raise StartupError(str(e))
    if names and options["queue-address"] not in names:
        options["queue"] = queueURL(names[0], options["msgqueue-port"])


def makeService(options: Options, reactor=None) -> MultiService:
    def build(reactor) -> StopInOrder:
        verifyUnderCertificateName(options)
        # Stopped in reverse: the subscriber, then the publisher (which drains into
        # msgqueue), then msgqueue.
        buildAuthenticator(options, reactor, log).allowInternalAccount(options["queue-user"], options["queue-password"])
        service = StopInOrder()
        msgqueue.buildMsgQueue(options, reactor, options["msgqueue-port"]).setServiceParent(service)
        publisher.buildPublisher(options, reactor, options["publisher-port"]).setServiceParent(service)
        subscriber.buildSubscriber(options, reactor, options["subscriber-port"]).setServiceParent(service)
        return service

    return daemonService("wsqueue", options, reactor, build)
