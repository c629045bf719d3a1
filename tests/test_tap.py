"""
Tests for the twistd plugins: L{wsqueue.tap}, L{wsqueue.options} and
C{twisted/plugins/wsqueue_plugins.py}.

The option names and defaults are a contract with init scripts and the benchmark,
and configuration mistakes must stop a daemon in C{makeService} with one line
naming the problem, before anything listens.  Services are started on a
L{MemoryReactorClock}, so nothing touches the network.
"""

from __future__ import annotations

import os
import resource
import signal
import socket

from twisted.application.service import IService, IServiceMaker, Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.auth import INTERNAL_USER, basicHeader, writeCredentialsFile
from wsqueue.broker import Retention
from wsqueue.certs import makeDevelopmentCertificates
from wsqueue.options import defaultGroup
from wsqueue.server import Limits
from wsqueue.tap import _common, allinone, msgqueue, publisher, subscriber

TAPS = {
    "wsqueue-msgqueue": (msgqueue, 8080),
    "wsqueue-publisher": (publisher, 8081),
    "wsqueue-subscriber": (subscriber, 8082),
}
LINKED = {"wsqueue-publisher": publisher, "wsqueue-subscriber": subscriber}


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


class OptionsTests(SynchronousTestCase):
    """
    Tests for each daemon's Options.
    """

    def setUp(self) -> None:
        # Defaults must not depend on the environment of whoever runs the tests.
        self.patch(os, "environ", {})

    def parse(self, module, *argv: str) -> usage.Options:
        options = module.Options()
        options.parseOptions(list(argv))
        return options

    def test_serverDefaults(self) -> None:
        """
        Every daemon defaults to its own port on 127.0.0.1, 1 MiB messages, 20 s pings and ./certs.
        """
        for tapname, (module, port) in TAPS.items():
            options = self.parse(module)
            self.assertEqual(options["port"], port, tapname)
            self.assertEqual(options["interface"], "127.0.0.1")
            self.assertEqual(options["max-message-size"], 1048576)
            self.assertEqual(options["ping-interval"], 20)
            self.assertEqual(options["cert-dir"], "certs")
            self.assertIsNone(options["credentials"])
            self.assertEqual(options.limits(), Limits(maxMessageSize=1048576, pingInterval=20.0))

    def test_linkDefaults(self) -> None:
        """
        Publisher and subscriber default to wss://localhost:8080 as hello/test, verifying TLS.
        """
        for tapname, module in LINKED.items():
            options = self.parse(module)
            self.assertEqual(options["queue"], "wss://localhost:8080", tapname)
            self.assertEqual((options["queue-user"], options["queue-password"]), ("hello", "test"))
            self.assertFalse(options["insecure"])
            self.assertIsNone(options["ca"])

    def test_msgqueueDefaults(self) -> None:
        """
        msgqueue holds 100000 messages and 1000 unacknowledged per consumer.
        """
        options = self.parse(msgqueue)
        self.assertEqual((options["max-queued"], options["max-in-flight"]), (100_000, 1000))

    def test_values(self) -> None:
        """
        Given values are parsed to their types.
        """
        options = self.parse(
            msgqueue, "--port", "9000", "--interface", "0.0.0.0", "--max-message-size", "2048",
            "--ping-interval", "2.5", "--max-queued", "5", "--max-in-flight", "3", "--cert-dir", "/x",
            "--credentials", "/y",
        )
        self.assertEqual(
            (options["port"], options["interface"], options["max-message-size"], options["ping-interval"],
             options["max-queued"], options["max-in-flight"], options["cert-dir"], options["credentials"]),
            (9000, "0.0.0.0", 2048, 2.5, 5, 3, "/x", "/y"),
        )
        self.assertEqual(options.limits(), Limits(maxMessageSize=2048, pingInterval=2.5))

    def test_portZero(self) -> None:
        """
        Port 0 (any free port) is accepted for a single daemon.
        """
        self.assertEqual(self.parse(msgqueue, "--port", "0")["port"], 0)

    def test_certDirFromEnvironment(self) -> None:
        """
        Without --cert-dir, $WS_CERT_DIR is the certificate folder.
        """
        self.patch(os, "environ", {"WS_CERT_DIR": "/etc/wsqueue"})
        self.assertEqual(self.parse(msgqueue)["cert-dir"], "/etc/wsqueue")
        self.assertEqual(self.parse(msgqueue, "--cert-dir", "/mine")["cert-dir"], "/mine")

    def test_badValues(self) -> None:
        """
        Out-of-range or malformed values are usage errors, for every daemon.
        """
        for tapname, (module, _) in TAPS.items():
            for argv in [
                ["--port", "70000"],
                ["--port", "-1"],
                ["--port", "x"],
                ["--max-message-size", "0"],
                ["--max-message-size", "big"],
                ["--ping-interval", "-1"],
                ["--ping-interval", "0"],
            ]:
                self.assertRaises(usage.UsageError, self.parse, module, *argv)
            self.assertEqual(self.parse(module, "--port", "65535")["port"], 65535, tapname)

    def test_badPortMessage(self) -> None:
        """
        A bad --port says what is expected and what was given.
        """
        e = self.assertRaises(usage.UsageError, self.parse, msgqueue, "--port", "70000")
        self.assertIn("--port must be an integer between 0 and 65535", str(e))
        self.assertIn("70000", str(e))

    def test_badMsgqueueLimits(self) -> None:
        """
        msgqueue's limits must be positive.
        """
        for argv in [["--max-queued", "0"], ["--max-in-flight", "-3"]]:
            self.assertRaises(usage.UsageError, self.parse, msgqueue, *argv)

    def test_badQueueURL(self) -> None:
        """
        --queue must be a wss:// URL with a host and a valid port.
        """
        for tapname, module in LINKED.items():
            for url in ["http://x", "ws://localhost:8080", "wss://", "wss://localhost:99999"]:
                e = self.assertRaises(usage.UsageError, self.parse, module, "--queue", url)
                self.assertTrue(str(e).startswith("--queue: "), (tapname, str(e)))

    def test_queueCredentialsFromEnvironment(self) -> None:
        """
        Queue user and password default to $WSQUEUE_QUEUE_USER/_PASSWORD; options win.
        """
        self.patch(os, "environ", {"WSQUEUE_QUEUE_USER": "alice", "WSQUEUE_QUEUE_PASSWORD": "secret"})
        for module in LINKED.values():
            options = self.parse(module)
            self.assertEqual((options["queue-user"], options["queue-password"]), ("alice", "secret"))
            options = self.parse(module, "--queue-user", "bob", "--queue-password", "pw")
            self.assertEqual((options["queue-user"], options["queue-password"]), ("bob", "pw"))

    def test_subscriberDefaultGroup(self) -> None:
        """
        The default group names host and port: stable across restarts, distinct per daemon.
        """
        first = self.parse(subscriber)["group"]
        self.assertEqual(first, f"subscriber-{socket.gethostname()}-8082")
        self.assertEqual(self.parse(subscriber)["group"], first)
        self.assertEqual(self.parse(subscriber, "--port", "9000")["group"], f"subscriber-{socket.gethostname()}-9000")
        self.assertEqual(defaultGroup(8082), first)

    def test_subscriberGroup(self) -> None:
        """
        --group names the consumer group.
        """
        self.assertEqual(self.parse(subscriber, "--group", "analytics")["group"], "analytics")

    def test_subscriberBadGroup(self) -> None:
        """
        A group that could not be a topic is a usage error saying what is wrong with it.
        """
        e = self.assertRaises(usage.UsageError, self.parse, subscriber, "--group", "a b")
        self.assertEqual(str(e), "--group: must not contain whitespace or control characters")
        for group in ["a*", "", "g" * 300]:
            self.assertRaises(usage.UsageError, self.parse, subscriber, "--group", group)


class HelpTests(SynchronousTestCase):
    """
    (#8, item 13) Every daemon's --help gives every option's default.
    """

    def test_everyOptionHasItsDefault(self) -> None:
        for tapname, (module, port) in TAPS.items():
            text = " ".join(str(module.Options()).split())
            if module is not allinone:
                self.assertIn(f"--port= The TCP port to listen on. [default: {port}]", text, tapname)
            for line in str(module.Options()).split("\n      --")[1:]:
                name = line.split()[0]
                if name.endswith("=") and name != "help":
                    self.assertIn("default", " ".join(line.split()), f"{tapname} {name}")


class AllInOneOptionsTests(SynchronousTestCase):
    """
    Tests for the all-in-one daemon's Options.
    """

    def setUp(self) -> None:
        self.patch(os, "environ", {})

    def parse(self, *argv: str) -> allinone.Options:
        options = allinone.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """
        The three stages get the separate daemons' ports and the union of their options.
        """
        options = self.parse()
        self.assertEqual(
            (options["msgqueue-port"], options["publisher-port"], options["subscriber-port"]), (8080, 8081, 8082)
        )
        self.assertEqual(options["queue"], "wss://localhost:8080")
        self.assertEqual((options["max-queued"], options["max-buffered"]), (100_000, 10_000))
        self.assertEqual(options["group"], f"subscriber-{socket.gethostname()}-8082")

    def test_internalAccount(self) -> None:
        """
        (#8, item 11) The stages link with the internal account and a random
        password, never the demo account, whatever credentials file is given.
        """
        first, second = self.parse(), self.parse("--credentials", "users.txt")
        self.assertEqual((first["queue-user"], second["queue-user"]), (INTERNAL_USER, INTERNAL_USER))
        self.assertNotEqual(first["queue-password"], second["queue-password"])
        self.assertGreaterEqual(len(first["queue-password"]), 32)

    def test_separateDaemonsOptionsRefused(self) -> None:
        """
        (#8, item 13) Options the all-in-one sets itself are neither listed by
        --help nor accepted.
        """
        usage_ = str(allinone.Options())
        for option in ("--port", "--queue=", "--queue-user", "--queue-password"):
            self.assertNotIn(option, usage_)
            self.assertRaises(usage.UsageError, self.parse, option.rstrip("=") + "=x")
        self.assertIn("--msgqueue-port", usage_)

    def test_queueFollowsMsgqueuePort(self) -> None:
        """
        The stages' msgqueue URL is derived from --msgqueue-port.
        """
        options = self.parse("--msgqueue-port", "9100")
        self.assertEqual(options["queue"], "wss://localhost:9100")

    def test_queueFollowsInterface(self) -> None:
        """
        Stages connect to the listening interface: loopback/wildcard as localhost, IPv6 bracketed.
        """
        for interface, queue in [
            ("0.0.0.0", "wss://localhost:8080"),
            ("::", "wss://localhost:8080"),
            ("::1", "wss://localhost:8080"),
            ("10.1.2.3", "wss://10.1.2.3:8080"),
            ("queue.example", "wss://queue.example:8080"),
            ("fd00::5", "wss://[fd00::5]:8080"),
        ]:
            self.assertEqual(self.parse("--interface", interface)["queue"], queue, interface)

    def test_msgqueuePortZero(self) -> None:
        """
        --msgqueue-port 0 is refused: the other stages could not find msgqueue.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--msgqueue-port", "0")
        self.assertIn("--msgqueue-port", str(e))

    def test_badPorts(self) -> None:
        """
        Each stage's port is checked.
        """
        for option in ["--msgqueue-port", "--publisher-port", "--subscriber-port"]:
            self.assertRaises(usage.UsageError, self.parse, option, "70000")
            self.assertRaises(usage.UsageError, self.parse, option, "x")

    def test_groupFollowsSubscriberPort(self) -> None:
        """
        The default group uses the subscriber stage's port.
        """
        self.assertEqual(self.parse("--subscriber-port", "9200")["group"], f"subscriber-{socket.gethostname()}-9200")


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for each daemon's makeService over a L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        self.patch(os, "environ", {})
        self.certDir = self.mktemp()
        makeDevelopmentCertificates(self.certDir)
        self.reactor = MemoryReactorClock()

    def options(self, module, *argv: str) -> usage.Options:
        options = module.Options()
        options.parseOptions(["--cert-dir", self.certDir, *_memoryStore(module), *argv])
        return options

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
        self.assertEqual(service.owner.maxBuffered, 50)
        self.assertEqual(service.factory.maxMessagePayloadSize, 1048576)
        self.assertEqual([(host, port) for host, port, *_ in self.reactor.tcpClients], [("127.0.0.1", 9000)])

    def test_subscriberLink(self) -> None:
        """
        The subscriber reads its URL-quoted group from /popmsg with explicit acknowledgements.
        """
        service = self.start(subscriber, "--queue", "wss://127.0.0.1:9000/", "--group", "a/b&c")
        self.assertEqual(service.link.url, "wss://127.0.0.1:9000/popmsg?group=a%2Fb%26c&ack=explicit&batch=1")
        self.assertEqual([(host, port) for host, port, *_ in self.reactor.tcpClients], [("127.0.0.1", 9000)])

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
        Without --credentials, each daemon warns that only the demo account is accepted.
        """
        for tapname, (module, _) in TAPS.items():
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            module.makeService(self.options(module), reactor=self.reactor)
            warnings = [e for e in events if e["log_level"] == LogLevel.warn and "--credentials" in e["log_format"]]
            self.assertEqual(len(warnings), 1, tapname)
            self.assertEqual((warnings[0]["user"], warnings[0]["password"]), ("hello", "test"))

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
    options.parseOptions(["--cert-dir", folder, "--port", "0", *_memoryStore(module)])
    return options


def _memoryStore(module) -> list[str]:
    """
    C{--store memory} for the plugins that have a store, so these tests write no files.
    """
    return ["--store", "memory"] if module in (msgqueue, allinone) else []


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
        handler = service.factory.routes["/subscribe"](type("C", (), {})(), None)
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
