"""
Tests for the daemons' command-line options (L{wsqueue.options} and each plugin's
C{Options}): names, defaults and their help, validation, and what the all-in-one
daemon sets itself.  The option names and defaults are a contract with init scripts
and the benchmark.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.auth import INTERNAL_USER
from wsqueue.options import defaultGroup, joinDescription, listenPort, splitDescription
from wsqueue.server import Limits
from wsqueue.tap import allinone, msgqueue, subscriber

from .helpers import LINKED, TAPS


class CleanOptionsMixin:
    """
    Parses a daemon's options in a clean environment: defaults must not depend on
    the environment of whoever runs the tests.
    """

    def setUp(self) -> None:
        self.patch(os, "environ", {})

    def parse(self, module, *argv: str) -> usage.Options:
        options = module.Options()
        options.parseOptions(list(argv))
        return options


class OptionsTests(CleanOptionsMixin, SynchronousTestCase):
    """
    Tests for each daemon's Options.
    """

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

    def test_severalQueues(self) -> None:
        """
        (#10, item 3) --queue may be given more than once: the link tries each in
        order; a bad URL among them is refused.
        """
        for tapname, module in LINKED.items():
            options = self.parse(module, "--queue", "wss://mq1:8080", "--queue", "wss://mq2:8080")
            self.assertEqual(options["queues"], ["wss://mq1:8080", "wss://mq2:8080"], tapname)
            self.assertEqual(options["queue"], "wss://mq1:8080")
            with self.assertRaises(usage.UsageError):
                self.parse(module, "--queue", "wss://mq1:8080", "--queue", "http://mq2")

    def test_allowedOrigins(self) -> None:
        """
        (#11, item 3) --allowed-origins takes exact origins (or null), repeatable,
        on every daemon; anything else is refused with the form to use.
        """
        for tapname, (module, _) in TAPS.items():
            self.assertEqual(self.parse(module)["allowed-origins"], [], tapname)
            options = self.parse(module, "--allowed-origins", "https://App.example.org",
                                 "--allowed-origins", "http://localhost:3000", "--allowed-origins", "null")
            self.assertEqual(options["allowed-origins"], ["https://app.example.org", "http://localhost:3000", "null"])
        for bad in ("app.example.org", "https://app.example.org/", "https://app.example.org/path", "ftp://x",
                    "https://user@app.example.org", "https://app.example.org:99999", "*"):
            with self.assertRaises(usage.UsageError, msg=bad) as raised:
                self.parse(TAPS["wsqueue-publisher"][0], "--allowed-origins", bad)
            self.assertIn("--allowed-origins", str(raised.exception))

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


class ListenOptionTests(CleanOptionsMixin, SynchronousTestCase):
    """
    (#9, item 8) C{--listen DESCRIPTION}: Twisted endpoint descriptions instead of
    C{--port}/C{--interface}.
    """

    def test_default(self) -> None:
        """
        Without --listen, every daemon has none, and its port and interface as before.
        """
        for tapname, (module, port) in TAPS.items():
            options = self.parse(module)
            self.assertEqual((options["listen"], options["port"], options["interface"]), ([], port, "127.0.0.1"), tapname)

    def test_repeatable(self) -> None:
        """
        --listen may be given more than once, for every daemon; each is kept, in order.
        """
        for tapname, (module, _) in TAPS.items():
            options = self.parse(module, "--listen", "ssl:8443", "--listen", "unix:/run/wsq.sock")
            self.assertEqual(options["listen"], ["ssl:8443", "unix:/run/wsq.sock"], tapname)

    def test_notWithPortOrInterface(self) -> None:
        """
        --listen with an explicit --port or --interface (even their default values)
        is a usage error naming them, for every daemon.
        """
        for tapname, (module, port) in TAPS.items():
            for argv, names in [
                (["--port", str(port)], "--port"),
                (["--interface", "127.0.0.1"], "--interface"),
                (["--interface", "0.0.0.0", "--port", "9000"], "--port and --interface"),
            ]:
                for order in (["--listen", "tcp:9000", *argv], [*argv, "--listen", "tcp:9000"]):
                    e = self.assertRaises(usage.UsageError, self.parse, module, *order)
                    self.assertEqual(str(e), f"--listen replaces {names}: give one or the other, not both", tapname)

    def test_badForms(self) -> None:
        """
        A description with no endpoint type, a C{tls:} that wraps nothing or wraps
        TLS, or a lone trailing backslash is a usage error naming it.
        """
        for description, fragment in [
            ("", "must start with an endpoint type"),
            ("port=8443", "must start with an endpoint type"),
            ("tls:", "tls: must wrap a description"),
            ("tls", "tls: must wrap a description"),
            ("tls:ssl:8443", "ssl: is TLS already"),
            ("tls:tls:unix:/run/wsq.sock", "tls: is TLS already"),
            ("unix:/run/wsq.sock\\", "lone backslash"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, msgqueue, "--listen", description)
            self.assertTrue(str(e).startswith(f"--listen {description!r}: "), str(e))
            self.assertIn(fragment, str(e))

    def test_subscriberGroup(self) -> None:
        """
        With --listen, the subscriber's default group names the first listener's
        port (as --port would), or else its description made a valid topic.
        """
        host = socket.gethostname()
        for description, group in [
            ("tcp:9000:interface=10.0.0.5", f"subscriber-{host}-9000"),
            ("ssl:port=9001", f"subscriber-{host}-9001"),
            ("tls:tcp:9002", f"subscriber-{host}-9002"),
            ("unix:/run/wsq.sock", f"subscriber-{host}-unix_/run/wsq.sock"),
            ("systemd:domain=INET:index=0", f"subscriber-{host}-systemd_domain=INET_index=0"),
            ("tls:unix:/run/a b*.sock", f"subscriber-{host}-tls_unix_/run/a_b_.sock"),
        ]:
            self.assertEqual(self.parse(subscriber, "--listen", description, "--listen", "tcp:1")["group"], group)


class DescriptionTests(SynchronousTestCase):
    """
    Tests for L{splitDescription}, L{joinDescription} and L{listenPort}: wsqueue
    reads endpoint descriptions as Twisted does.
    """

    def test_split(self) -> None:
        """
        Colons separate arguments, the first C{=} makes a keyword argument, a
        backslash escapes the next character.
        """
        self.assertEqual(
            splitDescription("unix:/run/a\\:b:mode=660:x=y=z:\\=:"),
            [(None, "unix"), (None, "/run/a:b"), ("mode", "660"), ("x", "y=z"), (None, "="), (None, "")],
        )

    def test_sameAsTwisted(self) -> None:
        """
        Twisted reads a joined split description as the description itself.
        """
        for description in ["tcp:8080:interface=\\:\\:1:backlog=5", "unix:/run/a\\:b\\=c:mode=660",
                            "unix:/run/x\\\\y", "ssl:443:privateKey=C\\:/k.pem"]:
            parts = splitDescription(description)
            self.assertEqual(splitDescription(joinDescription(parts)), parts)
            if parts[0][1] == "ssl":
                continue  # Twisted's ssl: reads the files; wsqueue reads it itself
            direct, joined = MemoryReactorClock(), MemoryReactorClock()
            factory = Factory.forProtocol(Protocol)
            serverFromString(direct, description).listen(factory)
            serverFromString(joined, joinDescription(parts)).listen(factory)
            self.assertEqual((direct.tcpServers, direct.unixServers), (joined.tcpServers, joined.unixServers))
            self.assertTrue(direct.tcpServers or direct.unixServers)

    def test_listenPort(self) -> None:
        """
        The port of a TCP description, plain or TLS, else None.
        """
        for description, port in [("tcp:80", 80), ("ssl:443:interface=x", 443), ("tls:tcp:port=8443", 8443),
                                  ("tcp6:81", 81), ("unix:/run/w", None), ("systemd:domain=INET:index=0", None),
                                  ("tcp:", None), ("tcp:x", None), ("tls:unix:/run/w", None)]:
            self.assertEqual(listenPort(description), port, description)


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

    def test_listen(self) -> None:
        """
        (#9, item 8) --help explains --listen (and the all-in-one's per-stage form):
        its forms, and which serve TLS.
        """
        for tapname, (module, _) in TAPS.items():
            text = " ".join(str(module.Options()).split())
            for fragment in ("--listen=", "ssl:PORT", "tls:DESCRIPTION", "unix:PATH", "systemd:domain=INET:index=0",
                             "WITHOUT TLS", "[default: none: TLS on --port and --interface]"):
                self.assertIn(fragment, text, tapname)
        # (usage wraps long words at their hyphens: "--msgqueue- listen")
        text = " ".join(str(allinone.Options()).split()).replace("- ", "-")
        self.assertIn("--publisher-listen=", text)
        self.assertIn("--subscriber-listen=", text)
        self.assertIn("no --msgqueue-listen", text)


class AllInOneOptionsTests(CleanOptionsMixin, SynchronousTestCase):
    """
    Tests for the all-in-one daemon's Options.
    """

    def parse(self, *argv: str) -> allinone.Options:  # type: ignore[override]
        return super().parse(allinone, *argv)

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
        for option in ("--port", "--listen=", "--queue=", "--queue-user", "--queue-password"):
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

    def test_stageListen(self) -> None:
        """
        (#9, item 8) --publisher-listen and --subscriber-listen, repeatable; the
        stages' ports keep their defaults, and --interface may come with them (it
        still applies to msgqueue).
        """
        options = self.parse("--publisher-listen", "unix:/run/pub.sock", "--publisher-listen", "tcp:9002",
                             "--subscriber-listen", "ssl:9003", "--interface", "0.0.0.0")
        self.assertEqual((options["publisher-listen"], options["subscriber-listen"]),
                         (["unix:/run/pub.sock", "tcp:9002"], ["ssl:9003"]))
        self.assertEqual((options["publisher-port"], options["subscriber-port"]), (8081, 8082))
        self.assertEqual(options["listen"], [])
        self.assertEqual(options["group"], f"subscriber-{socket.gethostname()}-9003")
        defaults = self.parse()
        self.assertEqual((defaults["publisher-listen"], defaults["subscriber-listen"]), ([], []))

    def test_stageListenNotWithItsPort(self) -> None:
        """
        A stage's --STAGE-listen with its explicit --STAGE-port is a usage error;
        with the other stage's port it is not.
        """
        for stage, other in (("publisher", "subscriber"), ("subscriber", "publisher")):
            e = self.assertRaises(usage.UsageError, self.parse, f"--{stage}-listen", "tcp:9000", f"--{stage}-port", "9001")
            self.assertEqual(str(e), f"--{stage}-listen replaces --{stage}-port: give one or the other, not both")
            self.assertEqual(self.parse(f"--{stage}-listen", "tcp:9000", f"--{other}-port", "9001")[f"{other}-port"], 9001)
        self.assertRaises(usage.UsageError, self.parse, "--publisher-listen", "tls:")

    def test_groupFollowsSubscriberPort(self) -> None:
        """
        The default group uses the subscriber stage's port.
        """
        self.assertEqual(self.parse("--subscriber-port", "9200")["group"], f"subscriber-{socket.gethostname()}-9200")
