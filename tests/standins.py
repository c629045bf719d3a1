"""
A stand-in msgqueue for testing the publisher and subscriber on their own, as the Go
project's tests did: it records what the stage sends and lets the test decide what
msgqueue answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from wsqueue import wire
from wsqueue.auth import makeAuthenticator
from wsqueue.link import QueueLink, QueueTarget
from wsqueue.server import EndpointHandler, Limits, StageServerFactory
from wsqueue.tls import clientEndpoint

from .helpers import caPath, listenTLS


class StandInPush(EndpointHandler):
    """
    /pushmsg: records each frame's messages; acknowledges them if the queue says so.
    """

    def __init__(self, connection, request, queue: StandInQueue) -> None:
        super().__init__(connection, request)
        self.queue = queue
        self.request = request

    def opened(self) -> None:
        self.queue.pushers.append(self)

    def received(self, payload: bytes, isBinary: bool) -> None:
        batch = [
            {"Id": message.id, "Topic": message.topic, "Content": message.content} if message.hasId
            else {"Topic": message.topic, "Content": message.content}
            for message in wire.parsePush(payload, isBinary)
        ]
        self.queue.pushed.extend(batch)
        if self.queue.autoAck:
            self.ack(batch[-1]["Id"])

    def ack(self, upTo) -> None:
        self.connection.sendMessage(wire.ack(upTo))


class StandInPop(EndpointHandler):
    """
    /popmsg: the test sends messages through it and reads the acknowledgements.
    """

    def __init__(self, connection, request, queue: StandInQueue) -> None:
        super().__init__(connection, request)
        self.queue = queue
        self.request = request
        self.acks: list[int | wire.WireError] = []

    def opened(self) -> None:
        self.queue.poppers.append(self)

    def received(self, payload: bytes, isBinary: bool) -> None:
        # A bad ack shows in the list as the WireError it parses to.
        self.acks.append(wire.parseOffsetAck(payload, isBinary))

    def deliverBatch(self, messages: list[list], epoch: str = "e1") -> None:
        self.connection.sendMessage(wire.deliveryBatch(epoch, messages))

    def deliver(self, topic: str, content: str, offset: int, epoch: str = "e1") -> None:
        self.connection.sendMessage(wire.delivery(topic, content, offset, epoch))


class StandInQueue:
    """
    A stand-in msgqueue listening on loopback TLS.
    """

    def __init__(self, testCase: TestCase, autoAck: bool = True) -> None:
        self.autoAck = autoAck
        self.pushed: list[dict] = []
        self.pushers: list[StandInPush] = []
        self.poppers: list[StandInPop] = []
        self.factory = StageServerFactory(
            {
                "/pushmsg": lambda connection, request: StandInPush(connection, request, self),
                "/popmsg": lambda connection, request: StandInPop(connection, request, self),
            },
            makeAuthenticator(None, reactor),
            Limits().internal(),
            reactor,
        )
        self.testCase = testCase
        self.port: int | None = None

    def listen(self, port: int = 0) -> int:
        self.port = listenTLS(self.testCase, self.factory, port)
        return self.port

    def dropAll(self) -> None:
        """
        Cut every connection without a closing handshake, as a crash would.
        """
        for connection in list(self.factory.connections):
            connection.transport.abortConnection()


def startLink(
    testCase: TestCase, port: int, path: str, owner, user: str = "hello", password: str = "test", retryPolicy=None,
    startDelay: float = 0.0, alternatives: Sequence[int] = (),
) -> QueueLink:
    """
    A running L{QueueLink} from C{owner} to a msgqueue on C{port} (or, failing
    over, on one of the C{alternatives} ports), retrying quickly, stopped when the
    test ends.
    """

    def target(port: int) -> QueueTarget:
        url = f"wss://localhost:{port}"
        return QueueTarget(clientEndpoint(reactor, url, caPath()), url + path)

    first = target(port)
    link = QueueLink(reactor, first.endpoint, first.url, user, password, owner, Limits(),
                     retryPolicy=retryPolicy or (lambda attempt: 0.05), startDelay=startDelay,
                     alternatives=[target(other) for other in alternatives])
    link.startService()
    testCase.addCleanup(link.stopService)
    return link
