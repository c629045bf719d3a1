"""
The public daemons' HTTP side as curl meets it, against real C{twistd} daemons:
every status code of C{POST /publish}, C{POST /ticket}, C{POST /login},
C{POST /logout}, C{GET /session} and the console's files, and tickets and session
cookies used on real WebSocket handshakes (curl's upgrade, and the C{websockets}
library).
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.daemons import Daemon, freePort, runProcess, startDaemon, startDaemonPipeline
from tests.helpers import Clients, caPath, nextJSON, withTimeout
from tests.test_curl import CURL, curl, requireExecutable, responseHead
from wsqueue.auth import hashPassword, writeCredentialsFile


def writeFile(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class Response:
    """
    What curl printed of one HTTP exchange: the status, headers (names
    lower-cased, the last value of each) and the body decoded as JSON when it is.
    """

    def __init__(self, output: str) -> None:
        head, _, self.text = output.partition("\r\n\r\n")
        while head.startswith("HTTP/1.1 100"):  # curl's Expect: 100-continue, for a large body
            head, _, self.text = self.text.partition("\r\n\r\n")
        statusLine, *lines = head.split("\r\n")
        self.status = int(statusLine.split()[1])
        self.headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        try:
            self.json = json.loads(self.text)
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.text[:300]!r}>"


async def curlHTTP(port: int, path: str, *options: str) -> Response:
    """
    C{curl -i --cacert <test CA> [options] https://localhost:PORT/path}, to the end.
    """
    code, output = await runProcess([CURL, "-sS", "-i", "--http1.1", "--cacert", caPath(), *options,
                                     f"https://localhost:{port}{path}"])
    assert code == 0, output
    return Response(output)


def basic(user: str = "hello", password: str = "test") -> tuple[str, str]:
    return ("-u", f"{user}:{password}")


def origin(port: int) -> tuple[str, str]:
    """
    The C{Origin} a page served by the daemon on C{port} sends.
    """
    return ("-H", f"Origin: https://localhost:{port}")


FOREIGN = ("-H", "Origin: https://evil.example")
MESSAGE = '{"Topic": "http", "Content": "from curl"}'


async def signIn(port: int, user: str = "hello", password: str = "test") -> str:
    """
    C{POST /login} on C{port}; the session cookie (C{name=value}) it set.
    """
    response = await curlHTTP(port, "/login", "-d", f"user={user}&password={password}")
    assert response.status == 200, response
    return response.headers["set-cookie"].split(";")[0]


class PublishTests(TestCase):
    """
    C{POST /publish} on a publisher daemon joined to msgqueue and a subscriber.
    """

    timeout = 90

    async def test_statuses(self) -> None:
        """
        200 C{{"Acked": N}} once stored, and the subscriber delivers the messages;
        400 for bad input (the WebSocket path's reasons); 401, 403, 405, 413; a
        GET without a WebSocket handshake still gets 400.
        """
        requireExecutable(CURL)
        pipeline = await startDaemonPipeline(self)
        port = pipeline.publisher.port
        clients = Clients(self)
        subscriber = await clients.connect(pipeline.subscriber.port, "/subscribe")
        subscriber.sendMessage(b'{"Topic": "http", "Content": "sub", "Id": 1}')
        self.assertEqual(await nextJSON(subscriber), {"Ack": 1})

        response = await curlHTTP(port, "/publish", *basic(), "-d", MESSAGE)
        self.assertEqual((response.status, response.json), (200, {"Acked": 1}), response)
        self.assertEqual(response.headers["content-type"], "application/json")
        self.assertEqual(response.headers["server"], "wsqueue")
        delivered = await nextJSON(subscriber)
        self.assertEqual((delivered["Topic"], delivered["Content"]), ("http", "from curl"))

        batch = json.dumps([{"Topic": "http", "Content": f"m{i}"} for i in range(3)])
        response = await curlHTTP(port, "/publish", *basic(), "-d", batch)
        self.assertEqual((response.status, response.json), (200, {"Acked": 3}), response)
        self.assertEqual([(await nextJSON(subscriber))["Content"] for _ in range(3)], ["m0", "m1", "m2"])

        for body, reason in [
            ("not json", "frame is not valid JSON"),
            ("[]", 'body must be a message object {"Topic": t, "Content": c} or a non-empty JSON array of them'),
            ('{"Topic": "", "Content": "x"}', "Topic must not be empty"),
            ('[{"Topic": "t", "Content": "x"}, {"Topic": "t", "Content": 5}]', "message 1: Content must be a string"),
        ]:
            response = await curlHTTP(port, "/publish", *basic(), "-d", body)
            self.assertEqual((response.status, response.json), (400, {"Error": reason}), body)

        response = await curlHTTP(port, "/publish", *basic("hello", "wrong"), "-d", MESSAGE)
        self.assertEqual((response.status, response.json), (401, {"Error": "missing or wrong credentials"}))
        self.assertEqual(response.headers["www-authenticate"], 'Basic realm="wsqueue"')
        response = await curlHTTP(port, "/publish", "-d", MESSAGE)
        self.assertEqual(response.status, 401, response)

        response = await curlHTTP(port, "/publish", *basic(), *FOREIGN, "-d", MESSAGE)
        self.assertEqual((response.status, response.json), (403, {"Error": "Origin not allowed"}))

        response = await curlHTTP(port, "/publish", *basic(), "-X", "PUT", "-d", MESSAGE)
        self.assertEqual(response.status, 405, response)
        self.assertEqual(response.headers["allow"], "GET, POST")
        response = await curlHTTP(port, "/ticket", *basic())
        self.assertEqual((response.status, response.headers["allow"]), (405, "POST"), response)

        large = os.path.abspath(self.mktemp())
        writeFile(large, json.dumps({"Topic": "http", "Content": "x" * (1024 * 1024)}))
        response = await curlHTTP(port, "/publish", *basic(), "--data-binary", f"@{large}")
        self.assertEqual((response.status, response.json), (413, {"Error": "request body is larger than 1048576 bytes"}))

        response = await curlHTTP(port, "/publish", *basic())
        self.assertEqual(response.status, 400, response)
        self.assertIn("WebSocket endpoint", response.json["Error"])

        # Nothing refused above reached the subscriber.
        self.assertEqual(subscriber.frames.pending, [])

    async def test_sessionCookie(self) -> None:
        """
        A session cookie publishes with the daemon's own Origin; without an Origin
        it is refused (403), so that no page whose origin is unknown rides on it.
        """
        requireExecutable(CURL)
        pipeline = await startDaemonPipeline(self)
        port = pipeline.publisher.port
        cookie = await signIn(port)
        response = await curlHTTP(port, "/publish", "-b", cookie, *origin(port), "-d", MESSAGE)
        self.assertEqual((response.status, response.json), (200, {"Acked": 1}), response)
        response = await curlHTTP(port, "/publish", "-b", cookie, "-d", MESSAGE)
        self.assertEqual(response.status, 403, response)
        self.assertEqual(response.json, {"Error": "a session cookie is accepted only with an Origin header"})

    async def test_msgqueueAway(self) -> None:
        """
        A publisher whose msgqueue is unreachable answers 503 at once, and says
        nothing was published.
        """
        requireExecutable(CURL)
        publisher = await startDaemon(self, "wsqueue-publisher", "--queue", f"wss://localhost:{freePort()}")
        response = await curlHTTP(publisher.port, "/publish", *basic(), "-d", MESSAGE)
        self.assertEqual(response.status, 503, response)
        self.assertEqual(response.json, {"Error": "msgqueue is unreachable; nothing was published", "Acked": 0})


class SignInTests(TestCase):
    """
    Tickets and session cookies on a publisher and a subscriber that share a
    C{--ticket-secret-file} (their msgqueue is away: both take clients all the same).
    """

    timeout = 90

    async def startPublicDaemons(self, *args: str) -> tuple[Daemon, Daemon]:
        secret = os.path.abspath(self.mktemp())
        writeFile(secret, "s" * 40 + "\n")
        queue = ("--queue", f"wss://localhost:{freePort()}", "--ticket-secret-file", secret, *args)
        publisher = await startDaemon(self, "wsqueue-publisher", *queue)
        subscriber = await startDaemon(self, "wsqueue-subscriber", *queue)
        return publisher, subscriber

    async def test_tickets(self) -> None:
        """
        C{POST /ticket} (Basic) gives a ticket that opens a WebSocket on the other
        daemon once; used again, or from a daemon with another secret, it gets 401
        like a wrong password.  Without credentials, 401; from a foreign origin, 403.
        """
        requireExecutable(CURL)
        publisher, subscriber = await self.startPublicDaemons()
        response = await curlHTTP(subscriber.port, "/ticket", *basic(), "-X", "POST")
        self.assertEqual(response.status, 200, response)
        self.assertEqual(set(response.json), {"Ticket", "Expires"})
        self.assertRegex(response.json["Ticket"], r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
        ticket = response.json["Ticket"]

        accepted = curl(self, publisher.port, f"/publish?ticket={ticket}")
        self.assertTrue((await responseHead(accepted)).startswith(b"HTTP/1.1 101"), accepted.err)
        reused = curl(self, publisher.port, f"/publish?ticket={ticket}")
        await withTimeout(reused.ended, what="curl to exit")
        self.assertTrue((await responseHead(reused)).startswith(b"HTTP/1.1 401"), reused.err)

        stranger = await startDaemon(self, "wsqueue-subscriber", "--queue", f"wss://localhost:{freePort()}")
        foreign = (await curlHTTP(stranger.port, "/ticket", *basic(), "-X", "POST")).json["Ticket"]
        refused = curl(self, publisher.port, f"/publish?ticket={foreign}")
        await withTimeout(refused.ended, what="curl to exit")
        self.assertTrue((await responseHead(refused)).startswith(b"HTTP/1.1 401"), refused.err)

        # The refusals are logged with their reason, never with the ticket.
        self.assertIn("missing or wrong credentials (ticket: already used)", publisher.logText())
        self.assertIn("missing or wrong credentials (ticket: bad signature)", publisher.logText())
        self.assertNotIn(ticket, publisher.logText() + subscriber.logText())

        response = await curlHTTP(subscriber.port, "/ticket", "-X", "POST")
        self.assertEqual((response.status, response.json), (401, {"Error": "missing or wrong credentials"}))
        response = await curlHTTP(subscriber.port, "/ticket", *basic(), *FOREIGN, "-X", "POST")
        self.assertEqual((response.status, response.json), (403, {"Error": "Origin not allowed"}))
        response = await curlHTTP(subscriber.port, "/ticket", *basic())
        self.assertEqual(response.status, 405, response)

    async def test_login(self) -> None:
        """
        C{POST /login} sets an HttpOnly, Secure, SameSite=Strict cookie for
        C{--session-ttl}; C{GET /session} knows it; the cookie opens a WebSocket
        with the daemon's own Origin, on both daemons; C{POST /logout} clears it.
        Wrong password 401, missing fields 400, foreign Origin 403.
        """
        requireExecutable(CURL)
        publisher, subscriber = await self.startPublicDaemons("--session-ttl", "2h")
        response = await curlHTTP(subscriber.port, "/login", "-d", "user=hello&password=test")
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.json["User"], "hello")
        cookie = response.headers["set-cookie"]
        self.assertRegex(cookie, r"^wsqueue_session=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+;")
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        self.assertEqual(attributes, {"path=/", "max-age=7200", "secure", "httponly", "samesite=strict"})
        session = cookie.split(";")[0]

        response = await curlHTTP(subscriber.port, "/session", "-b", session)
        self.assertEqual((response.status, response.json), (200, {"User": "hello"}))
        response = await curlHTTP(subscriber.port, "/session")
        self.assertEqual((response.status, response.json), (401, {"Error": "not signed in"}))

        clients = Clients(self)
        for daemon in (subscriber, publisher):
            path = "/subscribe" if daemon is subscriber else "/publish"
            protocol = await clients.connect(daemon.port, path, user=None, headers={
                "Cookie": session, "Origin": f"https://localhost:{subscriber.port}" if daemon is subscriber
                else f"https://localhost:{publisher.port}",
            })
            self.assertEqual(protocol.state, protocol.STATE_OPEN)
        response = await curlHTTP(publisher.port, "/ticket", "-b", session, *origin(publisher.port), "-X", "POST")
        self.assertEqual(response.status, 200, response)

        for body, status, error in [
            ("user=hello&password=nope", 401, "wrong user name or password"),
            ("user=nobody&password=test", 401, "wrong user name or password"),
            ("user=hello", 400, "give the form fields user and password, once each"),
        ]:
            response = await curlHTTP(subscriber.port, "/login", "-d", body)
            self.assertEqual((response.status, response.json), (status, {"Error": error}), body)
            self.assertNotIn("set-cookie", response.headers)
            self.assertNotIn("www-authenticate", response.headers)
        response = await curlHTTP(subscriber.port, "/login", *FOREIGN, "-d", "user=hello&password=test")
        self.assertEqual((response.status, response.json), (403, {"Error": "Origin not allowed"}))

        response = await curlHTTP(subscriber.port, "/logout", "-b", session, "-X", "POST")
        self.assertEqual((response.status, response.json), (200, {"User": None}))
        self.assertRegex(response.headers["set-cookie"], r"^wsqueue_session=;.*Max-Age=0")
        response = await curlHTTP(subscriber.port, "/logout", *FOREIGN, "-X", "POST")
        self.assertEqual(response.status, 403, response)
        self.assertIn("signed in as hello", subscriber.logText())
        self.assertNotIn(session.split("=", 1)[1], subscriber.logText() + publisher.logText())

    async def test_passwordChangeEndsSessions(self) -> None:
        """
        Changing a user's password in the credentials file, or removing the user,
        invalidates their session cookies (C{GET /session} 401 within the file's
        re-read interval); a new sign-in works with the new password.
        """
        requireExecutable(CURL)
        credentials = os.path.abspath(self.mktemp())
        bobsHash = hashPassword("two")
        writeCredentialsFile(credentials, {"alice": hashPassword("one"), "bob": bobsHash})
        _, subscriber = await self.startPublicDaemons("--credentials", credentials)
        alice = await signIn(subscriber.port, "alice", "one")
        bob = await signIn(subscriber.port, "bob", "two")
        self.assertEqual((await curlHTTP(subscriber.port, "/session", "-b", alice)).status, 200)

        writeCredentialsFile(credentials, {"alice": hashPassword("changed"), "bob": bobsHash})
        await self.waitForSessionStatus(subscriber.port, alice, 401)
        self.assertEqual((await curlHTTP(subscriber.port, "/session", "-b", bob)).status, 200)
        await signIn(subscriber.port, "alice", "changed")

        writeCredentialsFile(credentials, {"alice": hashPassword("changed")})
        await self.waitForSessionStatus(subscriber.port, bob, 401)

    async def waitForSessionStatus(self, port: int, cookie: str, status: int) -> None:
        seen: list[int] = []

        async def poll() -> None:
            while not seen or seen[-1] != status:
                seen.append((await curlHTTP(port, "/session", "-b", cookie)).status)

        await withTimeout(Deferred.fromCoroutine(poll()), 10, what=f"GET /session to answer {status}")


class ConsoleFilesTests(TestCase):
    """
    The console's files on the subscriber, with their security headers.
    """

    timeout = 60

    async def test_files(self) -> None:
        """
        C{/} is the page, C{/console.js} and C{/console.css} its script and style,
        each with a strict policy naming the publisher's origin (C{--publisher-url});
        C{/config.json} names that URL; anything else is a JSON 404.
        """
        requireExecutable(CURL)
        subscriber = await startDaemon(self, "wsqueue-subscriber", "--queue", f"wss://localhost:{freePort()}",
                                       "--publisher-url", "wss://pub.example.org:9443/publish")
        page = await curlHTTP(subscriber.port, "/")
        self.assertEqual(page.status, 200, page)
        self.assertEqual(page.headers["content-type"], "text/html; charset=utf-8")
        self.assertIn('<script src="/console.js"', page.text)
        self.assertNotRegex(page.text, r"<script>|<style|style=|\son[a-z]+=")
        policy = page.headers["content-security-policy"]
        self.assertIn("default-src 'none'", policy)
        self.assertIn("script-src 'self';", policy)
        self.assertIn("connect-src 'self' wss://pub.example.org:9443;", policy)
        self.assertIn("frame-ancestors 'none'", policy)
        script = await curlHTTP(subscriber.port, "/console.js")
        self.assertEqual((script.status, script.headers["content-type"]), (200, "text/javascript; charset=utf-8"))
        self.assertEqual(script.headers["x-content-type-options"], "nosniff")
        # Everything the page shows is written as text, never parsed as HTML.
        self.assertNotRegex(script.text, r"(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|eval\(")
        style = await curlHTTP(subscriber.port, "/console.css")
        self.assertEqual((style.status, style.headers["content-type"]), (200, "text/css; charset=utf-8"))
        config = await curlHTTP(subscriber.port, "/config.json")
        self.assertEqual(config.json, {"Publisher": "wss://pub.example.org:9443/publish"})
        missing = await curlHTTP(subscriber.port, "/nothing/here")
        self.assertEqual((missing.status, missing.json), (404, {"Error": "not found"}))
        plain = await curlHTTP(subscriber.port, "/subscribe", *basic())
        self.assertEqual(plain.status, 400, plain)

    async def test_defaultPublisher(self) -> None:
        """
        Without C{--publisher-url}, the console publishes to port 8081 on the host
        name the page came from; the all-in-one daemon names its own publisher port.
        """
        requireExecutable(CURL)
        subscriber = await startDaemon(self, "wsqueue-subscriber", "--queue", f"wss://localhost:{freePort()}")
        config = await curlHTTP(subscriber.port, "/config.json")
        self.assertEqual(config.json, {"Publisher": "wss://localhost:8081/publish"})
        ports = [freePort() for _ in range(3)]
        allInOne = await startDaemon(
            self, "wsqueue", "--msgqueue-port", str(ports[0]), "--publisher-port", str(ports[1]),
            "--subscriber-port", str(ports[2]), withPort=False, ports=ports,
        )
        config = await curlHTTP(ports[2], "/config.json")
        self.assertEqual(config.json, {"Publisher": f"wss://localhost:{ports[1]}/publish"})
        self.assertTrue(re.match(r"wss://localhost:\d+/publish", config.json["Publisher"]))
        self.assertEqual(allInOne.ports, ports)
