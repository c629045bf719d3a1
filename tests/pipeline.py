"""
The three stages in this test process, joined by real wss:// links on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from wsqueue.auth import makeAuthenticator
from wsqueue.broker import QueueBroker
from wsqueue.msgqueue import makeMsgQueueFactory
from wsqueue.publisher import Forwarder, makePublisherFactory
from wsqueue.server import Limits
from wsqueue.store.memory import MemoryStore
from wsqueue.subscriber import QueueReader, TopicRegistry, makeSubscriberFactory

from .helpers import listenTLS, waitFor
from .standins import startLink


@dataclass
class Pipeline:
    msgqueuePort: int
    publisherPort: int
    subscriberPort: int
    broker: QueueBroker
    forwarder: Forwarder
    reader: QueueReader


async def startPipeline(testCase: TestCase, group: str = "g") -> Pipeline:
    """
    Start msgqueue (keeping 1,000 messages of history, as the daemon keeps
    --history-max), publisher and subscriber; fire once both links are open.
    """
    authenticator = makeAuthenticator(None, reactor)
    broker = QueueBroker(MemoryStore(historyKeep=1000), reactor)
    msgqueuePort = listenTLS(testCase, makeMsgQueueFactory(broker, authenticator, Limits(), reactor))
    forwarder = Forwarder(reactor)
    publisherPort = listenTLS(testCase, makePublisherFactory(forwarder, authenticator, Limits(), reactor))
    reader = QueueReader(TopicRegistry(), reactor)
    subscriberPort = listenTLS(testCase, makeSubscriberFactory(reader, authenticator, Limits(), reactor))
    publisherLink = startLink(testCase, msgqueuePort, f"/pushmsg?producer={forwarder.producerName}", forwarder)
    subscriberLink = startLink(testCase, msgqueuePort, f"/popmsg?group={group}&ack=explicit", reader)
    await waitFor(lambda: publisherLink.protocol and subscriberLink.protocol, what="both links open")
    return Pipeline(msgqueuePort, publisherPort, subscriberPort, broker, forwarder, reader)
