# -*- test-case-name: tests.test_web -*-
"""
C{POST /publish} on the publisher: what backends use to publish without holding a
WebSocket open.

The body is one message object or a JSON array of them, checked as on the
WebSocket (L{wsqueue.wire.parsePublishBody}: all or nothing, 400 with the same
reasons).  The messages go through the same L{wsqueue.publisher.Forwarder} as
WebSocket messages, in order, and the answer waits until msgqueue has stored them:
200 C{{"Acked": N}}.  When msgqueue cannot take them (the link is down, the
publisher's buffer is full, msgqueue refuses or does not answer in time), the
answer is 503 C{{"Error": reason, "Acked": k}}, C{k} the number stored so far: the
client may retry (delivery is at least once).
"""

from __future__ import annotations

from twisted.web.server import Request

from wsqueue import wire
from wsqueue.access import Access
from wsqueue.acl import ACLFile
from wsqueue.publisher import NOT_ALLOWED, Forwarder
from wsqueue.web.site import AuthenticatedResource, answer, jsonBody

UNREACHABLE = "msgqueue is unreachable; nothing was published"


class _Waiting:
    """
    One HTTP publish waiting for msgqueue's answers: the forwarder calls
    L{acknowledge} or L{refuse} once per message it took (as for a WebSocket
    client, see L{wsqueue.publisher.PublishHandler}).
    """

    def __init__(self, request: Request, clock, timeout: float) -> None:
        self.request = request
        self.submitted = 0
        self.acked = 0
        self.answered = 0
        self.error: str | None = None
        self.complete = False
        self._timer = clock.callLater(timeout, self._late, timeout)

    def acknowledge(self, clientId: wire.JSONId) -> None:
        self.acked += 1
        self.answered += 1
        self._check()

    def refuse(self, error: wire.WireError) -> None:
        self.error = self.error or error.reason
        self.answered += 1
        self._check()

    def allSubmitted(self, error: str | None) -> None:
        """
        Every message that could be handed over has been (C{error}: why the rest
        could not be).
        """
        self.error = self.error or error
        self.complete = True
        self._check()

    def _check(self) -> None:
        if not self.complete or self.answered < self.submitted or not self._timer.active():
            return
        self._timer.cancel()
        if self.error is None:
            answer(self.request, 200, {"Acked": self.acked})
        else:
            answer(self.request, 503, {"Error": self.error, "Acked": self.acked})

    def _late(self, timeout: float) -> None:
        answer(self.request, 503, {
            "Error": f"msgqueue did not acknowledge within {timeout:g} s; the rest may still be stored",
            "Acked": self.acked,
        })


class PublishResource(AuthenticatedResource):
    """
    C{/publish} over plain HTTP: C{POST} publishes; C{GET} without a WebSocket
    handshake gets 400, as before.

    @ivar timeout: seconds to wait for msgqueue's acknowledgements before 503.
    """

    def __init__(self, access: Access, forwarder: Forwarder, clock, timeout: float, acl: ACLFile | None = None) -> None:
        super().__init__(access)
        self.forwarder = forwarder
        self.clock = clock
        self.timeout = timeout
        self.aclFile = acl

    def render_GET(self, request: Request) -> bytes:
        return jsonBody(request, 400, {
            "Error": "/publish is a WebSocket endpoint: open it with a WebSocket client, or POST messages to it"
        })

    def render_POST(self, request: Request) -> int:
        return self.authenticated(request, lambda user: self._publish(user, request))

    def _publish(self, user: str, request: Request) -> None:
        assert request.content is not None
        messages = wire.parsePublishBody(request.content.getvalue())
        if isinstance(messages, wire.WireError):
            answer(request, 400, {"Error": messages.reason})
            return
        if self.aclFile is not None:
            acl = self.aclFile.acl
            forbidden = [message.topic for message in messages if not acl.mayPublish(user, message.topic)]
            if forbidden:
                answer(request, 403, {"Error": f"{NOT_ALLOWED}: {forbidden[0]}"})
                return
        if not self.forwarder.linked:
            answer(request, 503, {"Error": UNREACHABLE, "Acked": 0})
            return
        waiting = _Waiting(request, self.clock, self.timeout)
        refused = None
        for index, message in enumerate(messages):
            # Numbered, so that the forwarder answers each (it answers only messages with an Id).
            error = self.forwarder.submit(wire.Message(message.topic, message.content, index, True), waiting)
            if error is not None:
                refused = error.reason
                break
            waiting.submitted += 1
        waiting.allSubmitted(refused)
