"""
Tests for the twistd plugins: L{wsqueue.tap} and C{twisted/plugins/wsqueue_plugins.py}
(the daemons' options are in L{tests.test_options}).

The option names and defaults are a contract with init scripts and the benchmark,
and configuration mistakes must stop a daemon in C{makeService} with one line
naming the problem, before anything listens.  Services are started on a
L{MemoryReactorClock}, so nothing touches the network.
"""

from __future__ import annotations

import os
import resource
import signal

from twisted.application.service import IService, IServiceMaker, Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.auth import basicHeader, writeCredentialsFile
from wsqueue.broker import Retention
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.server import Limits
from wsqueue.tap import _common, allinone, msgqueue, publisher, subscriber

from .helpers import LINKED, TAPS, DaemonOptionsMixin, memoryStoreArguments


class PluginTests(SynchronousTestCase):
    """
    Tests for the plugin file.
    """

    def test_pluginsFound(self) -> None:
        """
        twistd finds the four wsqueue plugins, each pointing at its tap module.
        """
        plugins = {plugin.tapname: plugin for plugin in getPlugins(IServiceMaker)}
        expected = {
            "wsqueue": "wsqueue.tap.allinone",
            "wsqueue-msgqueue": "wsqueue.tap.msgqueue",
            "wsqueue-publisher": "wsqueue.tap.publisher",
            "wsqueue-subscriber": "wsqueue.tap.subscriber",
        }
        for tapname, module in expected.items():
            self.assertIn(tapname, plugins)
            self.assertEqual(plugins[tapname].module, module)
            self.assertTrue(plugins[tapname].description)

    def test_pluginOptionsAndService(self) -> None:
        """
        Each plugin's options and makeService are its tap module's.
        """
        plugins = {plugin.tapname: plugin for plugin in getPlugins(IServiceMaker)}
        for tapname, module in [("wsqueue", allinone), *((name, mod) for name, (mod, _) in TAPS.items())]:
            self.assertIs(plugins[tapname].options, module.Options)
            self.assertEqual(plugins[tapname].makeService, module.makeService)


class MakeServiceTests(DaemonOptionsMixin, SynchronousTestCase):
    """
    Tests for each daemon's makeService over a L{MemoryReactorClock}.
    """

    def start(self, module, *argv: str):
        """
        Make and start the daemon's service; stop it when the test ends.
        """
        service = module.makeService(self.options(module, *argv), reactor=self.reactor)
        self.assertTrue(IService.providedBy(service))
        service.startService()
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service) -> None:
        """
        Stop C{service} and check that it stopped completely, leaving no timers.
        """
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def listening(self) -> list[tuple[int, str]]:
        return [(port, interface) for port, _, _, interface in self.reactor.tcpServers]

    def assertStartupError(self, tapname: str, module, *argv: str) -> str:
        """
        Assert that makeService exits with one line starting with the tap name;
        return it.  Nothing may have been listened on.
        """
        options = self.options(module, *argv)
        e = self.assertRaises(SystemExit, module.makeService, options, reactor=self.reactor)
        message = e.code
        self.assertIsInstance(message, str)
        self.assertTrue(message.startswith(f"{tapname}: "), message)
        self.assertNotIn("\n", message)
        self.assertEqual(self.reactor.tcpServers, [])
        return message

    def test_listens(self) -> None:
        """
        Each daemon listens with TLS on its default port and interface once started, not before.
        """
        for tapname, (module, port) in TAPS.items():
            self.reactor = MemoryReactorClock()
            service = module.makeService(self.options(module), reactor=self.reactor)
            self.assertEqual(self.reactor.tcpServers, [])
            service.startService()
            self.assertEqual(self.listening(), [(port, "127.0.0.1")], tapname)
            self.stop(service)

    def test_listensWhereTold(self) -> None:
        """
        --port and --interface choose the listening address.
        """
        self.start(msgqueue, "--port", "9443", "--interface", "0.0.0.0")
        self.assertEqual(self.listening(), [(9443, "0.0.0.0")])

    def test_serverCertificate(self) -> None:
        """
        The listener presents the certificate from --cert-dir.
        """
        from OpenSSL import crypto

        self.start(msgqueue)
        tlsFactory = self.reactor.tcpServers[0][1]
        tlsFactory.wrappedFactory = Factory.forProtocol(Protocol)  # TLS alone, no WebSocket timers
        connection = tlsFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        connection.makeConnection(StringTransport())
        with open(os.path.join(self.certDir, "server.crt"), "rb") as f:
            expected = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
        self.assertEqual(connection.getHandle().get_certificate().digest("sha256"), expected.digest("sha256"))

    def test_msgqueueSettings(self) -> None:
        """
        msgqueue's broker and protocol get the command line's limits (plus envelope room).
        """
        service = self.start(msgqueue, "--max-queued", "7", "--max-in-flight", "3", "--max-message-size", "4096",
                             "--ping-interval", "5")
        self.assertEqual((service.broker.maxQueued, service.broker.maxInFlight), (7, 3))
        internal = Limits(maxMessageSize=4096, pingInterval=5.0).internal()
        self.assertEqual(service.factory.maxMessagePayloadSize, internal.maxMessageSize)
        self.assertGreater(internal.maxMessageSize, 4096)
        self.assertEqual(service.factory.autoPingInterval, 5)

    def test_publisherLink(self) -> None:
        """
        The publisher links to /pushmsg as the queue user, named as a producer, with its buffer limit.
        """
        service = self.start(
            publisher, "--queue", "wss://127.0.0.1:9000", "--queue-user", "alice", "--queue-password", "pw",
            "--max-buffered", "50",
        )
        self.assertEqual(service.link.url, f"wss://127.0.0.1:9000/pushmsg?producer={service.owner.producerName}")
        self.assertEqual(service.link.factory.headers["Authorization"], basicHeader("alice", "pw"))
        self.assertEqual(service.owner.flow.limit, 50)
        self.assertEqual(service.factory.maxMessagePayloadSize, 1048576)
        self.assertEqual([(host, port) for host, port, *_ in self.reactor.tcpClients], [("127.0.0.1", 9000)])

    def test_subscriberLink(self) -> None:
        """
        The subscriber reads its URL-quoted group from /popmsg with explicit acknowledgements.
        """
        service = self.start(subscriber, "--queue", "wss://127.0.0.1:9000/", "--group", "a/b&c")
        self.assertEqual(service.link.url, "wss://127.0.0.1:9000/popmsg?group=a%2Fb%26c&ack=explicit&batch=1")
        self.assertEqual([(host, port) for host, port, *_ in self.reactor.tcpClients], [("127.0.0.1", 9000)])

    def test_linkFailsOver(self) -> None:
        """
        (#10, item 3) Several --queue: the link targets each, first to last, on the
        same path; it connects to the first first, and to the second once the first
        cannot be reached.
        """
        service = self.start(subscriber, "--queue", "wss://127.0.0.1:9000", "--queue", "wss://127.0.0.1:9001/",
                             "--group", "g")
        self.assertEqual([target.url for target in service.link.targets], [
            "wss://127.0.0.1:9000/popmsg?group=g&ack=explicit&batch=1",
            "wss://127.0.0.1:9001/popmsg?group=g&ack=explicit&batch=1",
        ])
        self.assertEqual([(host, port) for host, port, *_ in self.reactor.tcpClients], [("127.0.0.1", 9000)])
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.reactor.advance(10)  # the endpoint gives up, then the link waits before retrying
        self.reactor.advance(10)
        self.assertEqual([port for _, port, *_ in self.reactor.tcpClients], [9000, 9001])
        self.assertEqual(service.link.url, "wss://127.0.0.1:9001/popmsg?group=g&ack=explicit&batch=1")

    def test_allowedOriginsReachEveryServer(self) -> None:
        """
        (#11, item 3) --allowed-origins reaches each daemon's server, the
        all-in-one's three included.
        """
        for module in (msgqueue, publisher, subscriber):
            options = self.options(module, "--allowed-origins", "https://app.example.org")
            service = module.makeService(options, reactor=self.reactor)
            self.assertEqual(service.factory.permittedOrigins, {"https://app.example.org"})
        service = allinone.makeService(self.options(allinone, "--allowed-origins", "null"), reactor=self.reactor)
        stages = [stage for stage in service if isinstance(stage, _common.StopInOrder)]
        self.assertEqual([stage.factory.permittedOrigins for stage in stages], [{"null"}] * 3)

    def test_allInOne(self) -> None:
        """
        The all-in-one daemon listens on three ports and links its stages to its own msgqueue port.
        """
        service = allinone.makeService(
            self.options(allinone, "--msgqueue-port", "9001", "--publisher-port", "9002", "--subscriber-port", "9003"),
            reactor=self.reactor,
        )
        service.startService()
        self.addCleanup(self.stop, service)
        self.assertEqual(sorted(self.listening()), [(9001, "127.0.0.1"), (9002, "127.0.0.1"), (9003, "127.0.0.1")])
        self.assertEqual(sorted((host, port) for host, port, *_ in self.reactor.tcpClients),
                         [("127.0.0.1", 9001), ("127.0.0.1", 9001)])

    def test_missingCertDir(self) -> None:
        """
        A missing certificate folder stops every daemon with one line naming it.
        """
        missing = self.mktemp()
        for tapname, module in [("wsqueue", allinone), *((name, mod) for name, (mod, _) in TAPS.items())]:
            message = self.assertStartupError(tapname, module, "--cert-dir", missing)
            self.assertEqual(
                message.split(" (")[0], f"{tapname}: certificate folder {missing} does not exist"
            )

    def test_badCertificate(self) -> None:
        """
        An unusable certificate stops the daemon with one line naming the file.
        """
        with open(os.path.join(self.certDir, "server.key"), "w") as f:
            f.write("garbage")
        message = self.assertStartupError("wsqueue-msgqueue", msgqueue)
        self.assertIn(os.path.join(self.certDir, "server.key"), message)

    def test_missingCredentials(self) -> None:
        """
        A --credentials file that does not exist stops the daemon with one line naming it.
        """
        missing = self.mktemp()
        for tapname, module in [("wsqueue", allinone), *((name, mod) for name, (mod, _) in TAPS.items())]:
            message = self.assertStartupError(tapname, module, "--credentials", missing)
            self.assertIn(f"cannot read credentials file {missing}", message)

    def test_malformedCredentials(self) -> None:
        """
        A malformed credentials file stops the daemon naming the file and line.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice\n")
        message = self.assertStartupError("wsqueue-msgqueue", msgqueue, "--credentials", path)
        self.assertIn(f"{path}:1:", message)

    def test_missingCA(self) -> None:
        """
        A --ca file that does not exist stops a linked daemon with one line naming it.
        """
        missing = self.mktemp()
        for tapname, module in LINKED.items():
            message = self.assertStartupError(tapname, module, "--ca", missing)
            self.assertIn(f"CA certificate {missing} does not exist", message)

    def test_credentialsGiven(self) -> None:
        """
        With a readable --credentials file the daemon starts without the demo-account warning.
        """
        path = self.mktemp()
        writeCredentialsFile(path, {})
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start(msgqueue, "--credentials", path)
        self.assertEqual(self.listening(), [(8080, "127.0.0.1")])
        self.assertEqual([e for e in events if "--credentials" in e["log_format"]], [])

    def test_noCredentialsWarning(self) -> None:
        """
        Without --credentials, each daemon warns that only the demo account is
        accepted, naming the account and not its password (never a password in a log).
        """
        for tapname, (module, _) in TAPS.items():
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            module.makeService(self.options(module), reactor=self.reactor)
            warnings = [e for e in events if e["log_level"] == LogLevel.warn and "--credentials" in e["log_format"]]
            self.assertEqual(len(warnings), 1, tapname)
            self.assertEqual(warnings[0]["user"], "hello")
            self.assertNotIn("test", [value for value in warnings[0].values() if isinstance(value, str)])

    def test_allInOneWarnsOnce(self) -> None:
        """
        (#8, item 12) The all-in-one daemon's three stages share one authenticator:
        the demo-account warning is logged once, not three times by two loggers.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        allinone.makeService(self.options(allinone), reactor=self.reactor)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn and "--credentials" in e["log_format"]]
        self.assertEqual(len(warnings), 1)

    def test_insecureWarning(self) -> None:
        """
        --insecure is logged as a warning; without it, nothing about it is logged.
        """
        for module in LINKED.values():
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            module.makeService(self.options(module), reactor=self.reactor)
            self.assertEqual([e for e in events if "--insecure" in e["log_format"]], [])
            module.makeService(self.options(module, "--insecure"), reactor=self.reactor)
            warnings = [e for e in events if e["log_level"] == LogLevel.warn and "--insecure" in e["log_format"]]
            self.assertEqual(len(warnings), 1)

    def test_defaultReactor(self) -> None:
        """
        makeService without a reactor uses the global one (as twistd does), else the given one.
        """
        from twisted.internet import reactor

        self.assertIs(_common.defaultReactor(None), reactor)
        self.assertIs(_common.defaultReactor(self.reactor), self.reactor)


class _SignalReactor:
    """
    Records what L{ExitCleanlyOnSigterm} asks of the reactor.
    """

    def __init__(self) -> None:
        self.whenRunning: list = []
        self.fromThread: list = []
        self.stopped = False

    def callWhenRunning(self, f) -> None:
        self.whenRunning.append(f)

    def callFromThread(self, f) -> None:
        self.fromThread.append(f)

    def stop(self) -> None:
        self.stopped = True


class _CannotListen(Service):
    def privilegedStartService(self) -> None:
        raise CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))


class DaemonServiceTests(SynchronousTestCase):
    """
    What every plugin's service adds: SIGTERM exits 0, a port in use is one line.
    """

    def test_sigtermStopsTheReactor(self) -> None:
        """
        Once the reactor runs, SIGTERM's handler stops it (without twistd's re-raise,
        so the exit status is 0).
        """
        installed = {}
        self.patch(signal, "signal", lambda number, handler: installed.__setitem__(number, handler))
        reactor = _SignalReactor()
        service = _common.ExitCleanlyOnSigterm(reactor)
        service.startService()
        self.assertEqual(installed, {})
        [install] = reactor.whenRunning
        install()
        installed[signal.SIGTERM](signal.SIGTERM, None)
        [stop] = reactor.fromThread
        stop()
        self.assertTrue(reactor.stopped)

    def test_everyPluginStopsCleanly(self) -> None:
        """
        Each plugin's service includes the SIGTERM handler.
        """
        for module in (msgqueue, publisher, subscriber):
            service = module.makeService(_optionsFor(module, self.mktemp()), reactor=MemoryReactorClock())
            self.assertTrue([s for s in service if isinstance(s, _common.ExitCleanlyOnSigterm)], module)

    def test_portInUse(self) -> None:
        """
        A listener that cannot bind stops start-up with one line naming the address.
        """
        listening = _common._Listening()
        _CannotListen().setServiceParent(listening)
        with self.assertRaises(SystemExit) as raised:
            listening.privilegedStartService()
        message = str(raised.exception.code)
        self.assertTrue(message.startswith("wsqueue: cannot listen on 127.0.0.1:8080: "), message)
        self.assertNotIn("\n", message)


def _optionsFor(module, folder: str):
    makeDevelopmentCertificates(folder)
    options = module.Options()
    options.parseOptions(["--cert-dir", folder, "--port", "0", *memoryStoreArguments(module)])
    return options


class SubscriberOptionsTests(SynchronousTestCase):
    """
    The subscriber's client-buffer bound and resume grace.
    """

    def test_defaultsAndValues(self) -> None:
        """
        --max-client-buffer defaults to 1 MiB and --resume-grace to 0; both reach the
        factory and the link; negative or zero values are refused.
        """
        options = subscriber.Options()
        options.parseOptions([])
        self.assertEqual((options["max-client-buffer"], options["resume-grace"]), (1048576, 0.0))
        folder = self.mktemp()
        makeDevelopmentCertificates(folder)
        options = subscriber.Options()
        options.parseOptions(["--cert-dir", folder, "--max-client-buffer", "4096", "--resume-grace", "2.5"])
        service = subscriber.makeService(options, reactor=MemoryReactorClock())
        self.assertEqual(service.link.startDelay, 2.5)
        connection = type("C", (), {"factory": service.factory, "user": "hello"})()
        handler = service.factory.routes["/subscribe"](connection, None)
        self.assertEqual(handler.maxClientBuffer, 4096)
        # The same bound for everything else queued for a client (Acks, pongs).
        self.assertEqual(service.factory.limits.maxPeerBuffer, 4096)
        for bad in (["--max-client-buffer", "0"], ["--resume-grace", "-1"]):
            self.assertRaises(usage.UsageError, subscriber.Options().parseOptions, bad)


class ShutdownTests(SynchronousTestCase):
    """
    Stopping in order, within --shutdown-timeout.
    """

    def test_stopsInOrderAndWaits(self) -> None:
        """
        Children stop one after another, last added first, each after the previous
        one's Deferred fired.
        """
        order, gate = [], Deferred()
        root = _common.StopInOrder()
        _common.CallOnStop(lambda: order.append("first-added")).setServiceParent(root)
        _common.CallOnStop(lambda: order.append("last-added") or gate).setServiceParent(root)
        root.startService()
        stopped = root.stopService()
        self.assertEqual(order, ["last-added"])
        gate.callback(None)
        self.assertEqual(order, ["last-added", "first-added"])
        self.successResultOf(stopped)

    def test_timeout(self) -> None:
        """
        A stop that takes longer than the timeout is logged and reported done.
        """
        clock = Clock()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        root = _common.StopInOrder()
        root.shutdownTimeout = (clock, 10)
        _common.CallOnStop(Deferred).setServiceParent(root)
        root.startService()
        stopped = root.stopService()
        clock.advance(9)
        self.assertNoResult(stopped)
        clock.advance(1)
        self.successResultOf(stopped)
        self.assertTrue([e for e in events if "did not finish within" in e["log_format"]])

    def test_optionsReachTheDaemon(self) -> None:
        """
        --shutdown-timeout, --ack-wait, --max-deliver, the retention limits and
        --group-expiry (with units, or never) reach msgqueue's service and broker.
        """
        folder = self.mktemp()
        makeDevelopmentCertificates(folder)
        options = msgqueue.Options()
        options.parseOptions(["--cert-dir", folder, "--store", "memory", "--shutdown-timeout", "3",
                              "--ack-wait", "2m", "--max-deliver", "9", "--retention-max-messages", "50",
                              "--retention-max-bytes", "4096", "--retention-max-age", "1h", "--group-expiry", "2d"])
        reactor = MemoryReactorClock()
        service = msgqueue.makeService(options, reactor=reactor)
        broker = service.broker
        self.assertEqual(service.shutdownTimeout, (reactor, 3.0))
        self.assertEqual((broker.ackWait, broker.maxDeliver), (120.0, 9))
        self.assertEqual(broker.retention, Retention(50, 4096, 3600.0, 172800.0))
        never = msgqueue.Options()
        never.parseOptions(["--group-expiry", "never"])
        self.assertIsNone(never.retention().groupExpiry)
        for bad in (["--group-expiry", "soon"], ["--ack-wait", "0"], ["--retention-max-age", "-5m"]):
            self.assertRaises(usage.UsageError, msgqueue.Options().parseOptions, bad)


class OpenFileLimitTests(SynchronousTestCase):
    """
    Tests for L{_common.raiseOpenFileLimit}: a daemon takes all the descriptors its
    hard limit allows, so that 10,000 clients fit where the system lets them.
    """

    def limits(self, soft, hard, refuse: bool = False):
        calls = []

        def setrlimit(which, values):
            if refuse:
                raise ValueError("not allowed")
            calls.append(values)

        return (lambda which: (soft, hard)), setrlimit, calls

    def test_raisedToHard(self) -> None:
        """
        The soft limit goes up to the hard one, quietly when that is enough.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        getrlimit, setrlimit, calls = self.limits(1024, 65536)
        self.assertEqual(_common.raiseOpenFileLimit(getrlimit, setrlimit), 65536)
        self.assertEqual((calls, len(events)), ([(65536, 65536)], 0))

    def test_unlimited(self) -> None:
        """
        Under an unlimited hard limit the soft one goes to a generous finite number;
        an unlimited soft limit stays.
        """
        getrlimit, setrlimit, calls = self.limits(1024, resource.RLIM_INFINITY)
        self.assertEqual(_common.raiseOpenFileLimit(getrlimit, setrlimit), _common.UNLIMITED_OPEN_FILES)
        self.assertEqual(calls, [(_common.UNLIMITED_OPEN_FILES, resource.RLIM_INFINITY)])
        getrlimit, setrlimit, calls = self.limits(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        self.assertEqual(_common.raiseOpenFileLimit(getrlimit, setrlimit), resource.RLIM_INFINITY)
        self.assertEqual(calls, [])

    def test_lowHardLimitWarns(self) -> None:
        """
        A hard limit too low for 10,000 connections, or one that cannot be reached,
        is said in a warning that tells what to raise.
        """
        for soft, hard, refuse, expected in [(1024, 4096, False, 4096), (1024, 65536, True, 1024)]:
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            getrlimit, setrlimit, _ = self.limits(soft, hard, refuse)
            self.assertEqual(_common.raiseOpenFileLimit(getrlimit, setrlimit), expected)
            self.assertIn(LogLevel.warn, [event["log_level"] for event in events])
            self.assertIn("LimitNOFILE", events[-1]["log_format"])
