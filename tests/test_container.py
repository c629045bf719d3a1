"""
The container image (C{Dockerfile}) built and started here: Docker from Debian's
packages, a base image made with debootstrap (no image can be pulled on this
machine; C{deploy/base-image.sh}), the image built from this tree, the all-in-one
daemon started in it as a non-root user, probed on C{/healthz} and C{/readyz},
reached by curl over TLS, and reported healthy by Docker's own HEALTHCHECK.

C{.ci/run} installs docker.io and debootstrap and starts dockerd; without them the
test fails, it does not skip.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet.defer import Deferred
from twisted.trial.unittest import FailTest, TestCase

from tests.daemons import freePort, runProcess
from tests.helpers import certDir, withTimeout
from tests.test_http import curlHTTP
from tests.test_metrics import scrape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "wsqueue:test"
BASE = "wsqueue-base:bookworm"


async def run(*argv: str, timeout: float = 600) -> str:
    code, output = await runProcess(list(argv), timeout=timeout)
    if code != 0:
        raise FailTest(f"{' '.join(argv)} failed ({code}):\n{output[-3000:]}")
    return output


class ContainerTests(TestCase):
    timeout = 900

    async def test_image(self) -> None:
        if shutil.which("docker") is None or shutil.which("debootstrap") is None:
            raise FailTest("docker and debootstrap are needed: apt-get install docker.io debootstrap (see .ci/run)")
        await run("docker", "info", timeout=30)
        await run(os.path.join(REPO, "deploy", "base-image.sh"), BASE)
        await run("docker", "build", "-q", "--network", "host", "--build-arg", f"BASE={BASE}", "-t", IMAGE, REPO)

        # The certificate and key in a volume, readable by the image's user.
        certs = os.path.abspath(self.mktemp())
        shutil.copytree(certDir(), certs)
        for name in os.listdir(certs):
            os.chmod(os.path.join(certs, name), 0o644)
        os.chmod(certs, 0o755)
        ports = [freePort() for _ in range(4)]
        name = f"wsqueue-test-{ports[0]}"
        await run(
            "docker", "run", "-d", "--rm", "--name", name, "--network", "host", "-v", f"{certs}:/certs:ro",
            "-e", f"WSQUEUE_METRICS_PORT={ports[3]}", "--health-interval", "2s", "--health-start-period", "2s",
            IMAGE, "sh", "-c",
            f"exec twistd -n --pidfile= --logfile=- wsqueue --cert-dir /certs --store memory "
            f"--msgqueue-port {ports[0]} --publisher-port {ports[1]} --subscriber-port {ports[2]} "
            f"--metrics-port {ports[3]}",
        )
        self.addCleanup(runProcess, ["docker", "rm", "-f", name])

        await self.until(lambda: scrape(ports[3], "/readyz"), lambda answer: answer == (200, "ready\n"), "/readyz 200")
        self.assertEqual(await scrape(ports[3], "/healthz"), (200, "ok\n"))
        response = await curlHTTP(ports[1], "/publish", "-u", "hello:test", "-d", '{"Topic": "t", "Content": "x"}')
        self.assertEqual((response.status, response.json), (200, {"Acked": 1}))
        self.assertNotEqual((await run("docker", "exec", name, "id", "-u")).strip(), "0")
        await self.until(
            lambda: runProcess(["docker", "inspect", "--format", "{{.State.Health.Status}}", name]),
            lambda answer: answer[1].strip() == "healthy", "Docker's HEALTHCHECK to say healthy",
        )

    async def until(self, probe, done, what: str) -> None:
        async def poll() -> None:
            while True:
                try:
                    if done(await probe()):
                        return
                except (AssertionError, FailTest):
                    pass
                await Deferred.fromCoroutine(_sleep(0.5))

        await withTimeout(Deferred.fromCoroutine(poll()), 60, what=what)


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)
