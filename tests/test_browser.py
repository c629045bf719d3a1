"""
The web console in a real headless Chromium (Debian's C{chromium}, driven by
Selenium through Debian's C{chromium-driver}), against real C{twistd} daemons:
msgqueue, a publisher and a subscriber sharing a C{--ticket-secret-file}.

The browser trusts the test certificate by its public key only
(C{--ignore-certificate-errors-spki-list}): every other certificate check stays on.
Selenium's calls block, so the browser is driven from a thread
(C{deferToThread}); what the test does to the daemons meanwhile (restart one,
publish over HTTP) runs in the reactor (C{blockingCallFromThread}).  Every wait
is on a condition in the page, with a deadline.

Run them alone with C{./dev test tests.test_browser}.  C{WSQUEUE_CONSOLE_SCREENSHOT=PATH}
also saves the console's screenshot there (the README's comes from this test).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import FailTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.daemons import Daemon, startDaemon
from tests.helpers import caPath, certDir
from tests.test_http import writeFile

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20.0
"""Seconds any one condition in the page may take."""
XSS = "<img src=x onerror=alert(1)>"


def requireBrowser() -> None:
    """
    Fail, not skip, without the browser: .ci/run installs chromium and chromium-driver.
    """
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise FailTest(f"{path} is not installed: apt-get install chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise FailTest("selenium is not installed: pip install '.[test]'")


def serverKeyPin() -> str:
    """
    The base64 SHA-256 of the test server certificate's public key, as Chromium's
    C{--ignore-certificate-errors-spki-list} takes it.
    """
    with open(os.path.join(certDir(), "server.crt"), "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    key = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(key).digest()).decode("ascii")


def startBrowser(profile: str):
    """
    A headless Chromium under Selenium, with a profile of its own.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", f"--user-data-dir={profile}",
                     f"--ignore-certificate-errors-spki-list={serverKeyPin()}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


FOREIGN_PAGE = b"""<!doctype html><html><head><meta charset="utf-8">
<script src="/attempt.js" defer></script></head><body>foreign</body></html>"""
FOREIGN_SCRIPT = """
// A page from another origin tries the subscriber's WebSocket and its ticket API.
document.body.dataset.socket = "connecting";
const ws = new WebSocket("wss://localhost:%(port)d/subscribe");
ws.onopen = () => { document.body.dataset.socket = "open"; };
ws.onclose = () => { if (document.body.dataset.socket !== "open") document.body.dataset.socket = "refused"; };
fetch("https://localhost:%(port)d/ticket", {method: "POST", credentials: "include"}).then(
  (r) => { document.body.dataset.ticket = "answered " + r.status; },
  () => { document.body.dataset.ticket = "refused"; });
"""


def serveForeignPage(testCase: TestCase, subscriberPort: int) -> int:
    """
    Serve a page on C{http://127.0.0.1:PORT/}, an origin the daemons do not allow.
    """
    root = Resource()
    root.putChild(b"", Data(FOREIGN_PAGE, "text/html"))
    script = FOREIGN_SCRIPT % {"port": subscriberPort}
    root.putChild(b"attempt.js", Data(script.encode(), "text/javascript"))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


class ConsoleTests(TestCase):
    """
    The console, as a person uses it, in Chromium.
    """

    timeout = 180

    async def startDaemons(self) -> tuple[Daemon, Daemon, Daemon]:
        secret = os.path.abspath(self.mktemp())
        writeFile(secret, "browser-test-secret-" + "x" * 20)
        msgqueue = await startDaemon(self, "wsqueue-msgqueue")
        # The subscriber's port is known before it starts: the publisher allows its origin.
        subscriber = Daemon(self, "wsqueue-subscriber")
        publisher = Daemon(self, "wsqueue-publisher")
        common = ("--queue", msgqueue.url, "--ticket-secret-file", secret)
        publisher.argv += [*common, "--allowed-origins", f"https://localhost:{subscriber.port}"]
        subscriber.argv += [*common, "--publisher-url", f"wss://localhost:{publisher.port}/publish"]
        await publisher.start()
        await subscriber.start()
        await publisher.waitForLinks()
        await subscriber.waitForLinks()
        return msgqueue, publisher, subscriber

    async def test_console(self) -> None:
        """
        Sign in on the console, subscribe, receive a message published with
        C{POST /publish} (markup in it shows as text), publish from the page and see
        it arrive, survive a subscriber restart (the page reconnects and subscribes
        again by itself), and a page from a foreign origin cannot connect.
        """
        requireBrowser()
        _, publisher, subscriber = await self.startDaemons()
        foreignPort = serveForeignPage(self, subscriber.port)
        profile = os.path.abspath(self.mktemp())
        browser = await deferToThread(startBrowser, profile)
        self.addCleanup(deferToThread, browser.quit)
        screenshot = os.path.abspath(self.mktemp()) + ".png"

        def publishOverHTTP(content: str) -> dict:
            request = urllib.request.Request(
                f"https://localhost:{publisher.port}/publish", method="POST",
                data=json.dumps({"Topic": "news", "Content": content}).encode(),
                headers={"Authorization": "Basic " + base64.b64encode(b"hello:test").decode()},
            )
            context = ssl.create_default_context(cafile=caPath())
            with urllib.request.urlopen(request, context=context, timeout=WAIT) as response:
                return json.loads(response.read())

        def restartSubscriber() -> None:
            async def restart() -> None:
                mark = subscriber.eventMark()
                subscriber.kill()
                await subscriber.waitForExit()
                await subscriber.restart()
                await subscriber.waitForLinks(since=mark)

            blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(restart()))

        def scenario() -> None:
            from selenium.common.exceptions import NoAlertPresentException
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            wait = WebDriverWait(browser, WAIT)

            def find(selector: str):
                return browser.find_element(By.CSS_SELECTOR, selector)

            def waitFor(condition, what: str) -> None:
                wait.until(lambda _: condition(), message=f"waiting for {what}; console log: {consoleLog()}")

            def consoleLog() -> list:
                return [entry["message"] for entry in browser.get_log("browser")]

            def state(selector: str) -> str | None:
                return find(selector).get_attribute("data-state")

            def contents() -> list[str]:
                return [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#messages .content")]

            # Sign in.
            browser.get(f"https://localhost:{subscriber.port}/")
            waitFor(lambda: find("#login-form").is_displayed(), "the sign-in form")
            find("#user").send_keys("hello")
            find("#password").send_keys("wrong")
            find("#signin-button").click()
            waitFor(lambda: find("#login-error").text == "wrong user name or password", "the refusal")
            find("#password").clear()
            find("#password").send_keys("test")
            find("#signin-button").click()
            waitFor(lambda: find("#signed-in-user").text == "hello", "signed in as hello")
            waitFor(lambda: state("#state") == "open", "the subscribe socket open")

            # Subscribe; a message published with POST /publish arrives, as text.
            find("#topic").send_keys("news")
            find("#subscribe-form button[type=submit]").click()
            waitFor(lambda: "active" in find('#subscriptions li[data-topic="news"]').get_attribute("class"),
                    "the subscription acknowledged")
            self.assertEqual(publishOverHTTP(XSS), {"Acked": 1})
            waitFor(lambda: contents() == [XSS], "the published message")
            self.assertEqual(browser.find_elements(By.CSS_SELECTOR, "#messages img"), [])
            self.assertEqual(find("#messages .topic").text, "news")
            self.assertRegex(find("#messages .offset").text, r"^\d+$")
            with self.assertRaises(NoAlertPresentException, msg="the message's markup ran in the page"):
                browser.switch_to.alert.accept()

            # Publish from the page (a ticket opens the publisher's socket).
            waitFor(lambda: state("#publish-state") == "open", "the publish socket open")
            find("#publish-topic").send_keys("news")
            find("#publish-content").send_keys("from the page")
            find("#publish-button").click()
            waitFor(lambda: state("#publish-result") == "acked", "the page's message acknowledged")
            waitFor(lambda: contents()[:1] == ["from the page"], "the page's message delivered")
            browser.save_screenshot(screenshot)

            # The subscriber restarts: the page reconnects and subscribes again by itself.
            restartSubscriber()
            waitFor(lambda: state("#state") == "open"
                    and "active" in find('#subscriptions li[data-topic="news"]').get_attribute("class"),
                    "the page reconnected and subscribed again")
            self.assertEqual(publishOverHTTP("after the restart"), {"Acked": 1})
            waitFor(lambda: contents()[:1] == ["after the restart"], "a message after the restart")

            # A page from another origin gets nothing: its WebSocket and its fetch are refused.
            browser.get(f"http://127.0.0.1:{foreignPort}/")
            waitFor(lambda: find("body").get_attribute("data-socket") == "refused", "the foreign socket refused")
            waitFor(lambda: find("body").get_attribute("data-ticket") is not None, "the foreign fetch")
            self.assertEqual(find("body").get_attribute("data-ticket"), "refused")

        await deferToThread(scenario)
        refusals = await subscriber.waitForLog(f"Origin http://127.0.0.1:{foreignPort} is not allowed")
        self.assertTrue(refusals)
        self.assertTrue(os.path.getsize(screenshot) > 10_000)
        copy = os.environ.get("WSQUEUE_CONSOLE_SCREENSHOT")
        if copy:
            shutil.copyfile(screenshot, copy)
