"""
Property tests (hypothesis) for everything that reads a client's bytes: the wire
parsers (L{wsqueue.wire}) and the frame reader (L{wsqueue.frames.readFrames}).

Whatever a client sends, a parser returns a value and never raises; and whatever
it returns can be sent back (an Ack or an Error echoing the Id, a delivery) without
raising either.  A failure in either place reaches the client as "internal error"
and the log as a traceback per frame, far from the frame that caused it.

The runs are derandomized and keep no example database, so every run (and CI)
tries the same inputs; each property runs in well under a second.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import frames, wire
from wsqueue.wire import Message, Subscription, WireError

bounded = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Raw:
    """JSON text to splice into a frame as it is (json.dumps would recurse on it)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _dumps(value: object, ascii: bool = True) -> str:
    # JSON text for value, with non-ASCII characters escaped (\\u...) or raw.
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key, ensure_ascii=ascii)}:{_dumps(item, ascii)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(item, ascii) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii)


SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]

text = st.lists(
    st.one_of(st.characters(), st.sampled_from(SURROGATES), st.sampled_from(["*", ">", " ", "\x00"])), max_size=12
).map("".join)
"""Any text, lone surrogates included (hypothesis leaves them out by default)."""

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True), text,
    st.sampled_from(["sub", "unsub", "t", "news", ""]),
)
jsonValues = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(text, st.sampled_from(["Topic", "Content", "Id", "Messages"])), children, max_size=4),
    ),
    max_leaves=12,
)
"""Any JSON value (NaN and infinities too, which Python's json reads), of any depth."""


@st.composite
def deeplyNested(draw) -> str:
    """
    A JSON array or object nested from a few to far more levels than the
    recursion limit allows, as JSON text.
    """
    depth = draw(st.integers(min_value=1, max_value=5000))
    inner = json.dumps(draw(scalars))
    if draw(st.booleans()):
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


fieldValues = st.one_of(
    text, st.sampled_from(["t", "news", "sub", "unsub", 7]), jsonValues, deeplyNested().map(_Raw)
)
"""What goes into a field: text (with surrogates) and plausible values often, any JSON value, deep nesting."""


@st.composite
def messageObjects(draw, values: st.SearchStrategy = fieldValues) -> dict:
    """
    An object with any value (or none) in each field a parser reads, and more.
    """
    obj = {}
    for key in ("Topic", "Content", "Id"):
        if draw(st.integers(0, 4)):
            obj[key] = draw(values)
    obj.update(draw(st.dictionaries(text, jsonValues, max_size=2)))
    return obj


batches = st.builds(
    lambda entries: {"Messages": entries},
    st.one_of(fieldValues, st.lists(st.one_of(st.lists(fieldValues, min_size=3, max_size=3), fieldValues), max_size=4)),
)


@st.composite
def payloads(draw) -> bytes:
    """
    A frame's bytes: a message object, an array of them, a batch, any JSON value,
    or random bytes; JSON with escapes (C{\\ud800}) or as raw UTF-8 (with surrogates
    passed through, as a lax client might send them).
    """
    kind = draw(st.sampled_from(["object", "array", "batch", "value", "nested", "bytes", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "text":
        words = draw(st.lists(st.one_of(text, st.sampled_from(["sub", "unsub"])), max_size=3))
        return " ".join(words).encode("utf-8", "surrogatepass")
    value = {
        "object": messageObjects(),
        "array": st.lists(messageObjects(), max_size=3),
        "batch": batches,
        "value": jsonValues,
        "nested": deeplyNested().map(_Raw),
    }[kind]
    return _dumps(draw(value), ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def assertSendable(result: object) -> None:
    """
    Encode everything a server would send back for C{result}, as it would.
    """
    if isinstance(result, list):
        for item in result:
            assertSendable(item)
        return
    if isinstance(result, WireError):
        json.loads(result.encode())
        return
    assert isinstance(result, (Message, Subscription)), result
    if isinstance(result, Message):
        assert isinstance(result.topic, str) and isinstance(result.content, str)
        json.loads(wire.delivery(result.topic, result.content, 1, "epoch"))
        wire.encode({"Topic": result.topic, "Content": result.content})
    else:
        assert isinstance(result.topic, str) and isinstance(result.subscribe, bool)
        wire.encode({"Topic": result.topic})
    if result.hasId:
        json.loads(wire.ack(result.id))
        json.loads(WireError("refused", result.id, True).encode())


class ParserFuzzTests(SynchronousTestCase):
    """
    Every parser in L{wsqueue.wire} returns a sendable value for any frame.
    """

    @bounded
    @given(payloads(), st.booleans())
    def test_everyFrameParser(self, payload: bytes, isBinary: bool) -> None:
        """
        For the same bytes, parsePublish returns a Message or a WireError,
        parseSubscribe a Subscription or a WireError, parsePush a WireError or a
        non-empty list of Messages and WireErrors, decodeJSON a value or a WireError;
        whatever they return can be sent back.
        """
        published = wire.parsePublish(payload, isBinary)
        self.assertIsInstance(published, (Message, WireError))
        assertSendable(published)
        subscription = wire.parseSubscribe(payload, isBinary)
        self.assertIsInstance(subscription, (Subscription, WireError))
        assertSendable(subscription)
        pushed = wire.parsePush(payload, isBinary)
        if not isinstance(pushed, WireError):
            self.assertIsInstance(pushed, list)
            self.assertTrue(pushed)
            for item in pushed:
                self.assertIsInstance(item, (Message, WireError))
        assertSendable(pushed)
        wire.decodeJSON(payload)

    @bounded
    @given(st.one_of(messageObjects(jsonValues), jsonValues))
    def test_parseMessageObject(self, obj: object) -> None:
        """
        parseMessageObject (used on decoded array items) returns a sendable value.
        """
        result = wire.parseMessageObject(obj)
        self.assertIsInstance(result, (Message, WireError))
        assertSendable(result)

    @bounded
    @given(payloads())
    def test_decodeJSON(self, payload: bytes) -> None:
        """
        decodeJSON returns a value or a WireError for any bytes.
        """
        wire.decodeJSON(payload)

    @bounded
    @given(jsonValues)
    def test_checkIdAndTopic(self, value: object) -> None:
        """
        What checkId and checkTopic accept can be echoed back.
        """
        if wire.checkId(value) is None:
            wire.ack(value)
        if wire.checkTopic(value) is None:
            wire.encode({"Topic": value})


class ReadFramesFuzzTests(SynchronousTestCase):
    """
    L{frames.readFrames} on random bytes: it never raises and says where it stopped.
    """

    @bounded
    @given(st.binary(max_size=300), st.sampled_from([0, 1, 125, 126, 65536]), st.booleans())
    def test_randomBytes(self, data: bytes, limit: int, masked: bool) -> None:
        """
        Random bytes give frames at increasing offsets within the data, then a stop
        point and a need that make sense.
        """
        messages, stop, need = frames.readFrames(data, limit, masked)
        self.assertTrue(0 <= stop <= len(data))
        self.assertGreaterEqual(need, 0)
        offsets = [offset for offset, _, _ in messages]
        self.assertEqual(offsets, sorted(set(offsets)))
        self.assertTrue(all(offset < stop for offset in offsets))
        if need:
            self.assertGreater(stop + need, len(data))

    @bounded
    @given(st.lists(st.text(max_size=200), max_size=5), st.binary(max_size=40), st.booleans())
    def test_framesThenJunk(self, texts: list[str], junk: bytes, masked: bool) -> None:
        """
        Whole text frames followed by random bytes are all read, then reading stops
        at the junk or before it.
        """
        build = frames.maskedTextFrame if masked else frames.textFrame
        payloads = [t.encode("utf-8") for t in texts]
        data = b"".join(build(p) for p in payloads)
        messages, stop, _ = frames.readFrames(data + junk, 0, masked)
        self.assertEqual([payload for _, payload, _ in messages][: len(payloads)], payloads)
        self.assertGreaterEqual(stop, len(data))
