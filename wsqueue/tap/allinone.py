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
from wsqueue.options import (
    OptionTable,
    StartupError,
    _port,
    buildAuthenticator,
    checkListen,
    defaultGroup,
    listenerName,
    refuseWithListen,
)
from wsqueue.tap import msgqueue, publisher, subscriber
from wsqueue.tap._common import StopInOrder, daemonService
from wsqueue.tls import TLSConfigurationError, certificateNames

log = Logger()

NOT_FOR_ALL_IN_ONE = ("port", "listen", "queue", "queue-user", "queue-password")
"""The separate daemons' options that the all-in-one sets itself (C{--listen} is
per stage here: C{--publisher-listen}, C{--subscriber-listen})."""

STAGE_PORTS = {"publisher": 8081, "subscriber": 8082}
"""The default ports of the stages that may listen elsewhere (C{--STAGE-listen})."""


class Options(publisher.Options, subscriber.Options, msgqueue.Options):
    synopsis = "[options]"
    longdesc = (
        "msgqueue, publisher and subscriber in one process, joined over wss:// on loopback: "
        "the stages connect to this process's msgqueue with an account of their own."
    )
    optParameters: OptionTable = [
        ["msgqueue-port", None, 8080, ("msgqueue's port, always TLS on --interface: the other stages link to it "
                                       "over wss:// (so it has no --msgqueue-listen)."), _port],
        # None until postOptions: given, they may not come with --publisher-listen/--subscriber-listen.
        ["publisher-port", None, None, "publisher's port [default: 8081].", _port],
        ["subscriber-port", None, None, "subscriber's port [default: 8082].", _port],
    ]

    def __init__(self) -> None:
        super().__init__()
        # Options of the separate daemons that mean nothing here: neither listed by
        # --help nor accepted (getopt refuses what longOpt does not name).
        self.longOpt = [option for option in self.longOpt if option.rstrip("=") not in NOT_FOR_ALL_IN_ONE]
        self["publisher-listen"] = []
        self["subscriber-listen"] = []

    def opt_publisher_listen(self, description: str) -> None:
        self["publisher-listen"].append(checkListen("--publisher-listen", description))

    opt_publisher_listen.__doc__ = (
        "The publisher stage listens on this Twisted endpoint description instead of --publisher-port "
        "(as --listen of wsqueue-publisher; repeatable; --interface then applies to the other stages only) "
        "[default: none]."
    )

    def opt_subscriber_listen(self, description: str) -> None:
        self["subscriber-listen"].append(checkListen("--subscriber-listen", description))

    opt_subscriber_listen.__doc__ = (
        "The subscriber stage listens on this Twisted endpoint description instead of --subscriber-port "
        "(as --listen of wsqueue-subscriber; repeatable; --interface then applies to the other stages only) "
        "[default: none]."
    )

    def postOptions(self) -> None:
        for stage, port in STAGE_PORTS.items():
            given = [f"{stage}-port"] if self[f"{stage}-port"] is not None else []
            refuseWithListen(f"--{stage}-listen", self[f"{stage}-listen"], given)
            if not given:
                self[f"{stage}-port"] = port
        self["port"] = self["subscriber-port"]
        if self["group"] is None:
            self["group"] = defaultGroup(listenerName(self["subscriber-port"], self["subscriber-listen"]))
        subscriber.Options.postOptions(self)
        msgqueue.Options.postOptions(self)
        host = "localhost" if self["interface"] in ("127.0.0.1", "0.0.0.0", "::", "::1", "") else self["interface"]
        self["queue-address"] = host
        self["queue"] = queueURL(host, self["msgqueue-port"])
        self["queues"] = [self["queue"]]
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
        options["queues"] = [options["queue"]]


def makeService(options: Options, reactor=None) -> MultiService:
    def build(reactor) -> StopInOrder:
        verifyUnderCertificateName(options)
        # Stopped in reverse: the subscriber, then the publisher (which drains into
        # msgqueue), then msgqueue.
        buildAuthenticator(options, reactor, log).allowInternalAccount(options["queue-user"], options["queue-password"])
        service = StopInOrder()
        # msgqueue always listens with TLS on its port: the stages link to it over wss://.
        msgqueue.buildMsgQueue(options, reactor, options["msgqueue-port"], listen=()).setServiceParent(service)
        stages = [
            publisher.buildPublisher(options, reactor, options["publisher-port"], listen=options["publisher-listen"]),
            subscriber.buildSubscriber(options, reactor, options["subscriber-port"], listen=options["subscriber-listen"]),
        ]
        for stage in stages:
            # The console on the subscriber's port publishes to the publisher's: both are this daemon's own origins.
            stage.factory.siblingPorts = frozenset(options[f"{name}-port"] for name in STAGE_PORTS)
            stage.setServiceParent(service)
        return service

    return daemonService("wsqueue", options, reactor, build)
