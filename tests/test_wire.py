"""
Tests for L{wsqueue.wire}: the frame format every endpoint parses and emits.

Parsing must never raise: whatever a client sends becomes a L{Message}, a
L{Subscription} or a L{WireError} value, and errors carry the request's C{Id}
whenever it could be read so that the client can match them.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from wsqueue import wire
from wsqueue.wire import MAX_ID_LENGTH, MAX_TOPIC_LENGTH, Message, Subscription, WireError


def frame(obj: object) -> bytes:
    """
    A JSON text frame for C{obj}, as a client would send it.
    """
    return json.dumps(obj).encode("utf-8")


class ParsePublishTests(SynchronousTestCase):
    """
    Tests for L{wire.parsePublish}.
    """

    def assertError(self, result: object, reason: str, requestId: object = None, hasId: bool = False) -> None:
        """
        Assert that C{result} is a L{WireError} with C{reason} and the given C{Id}.
        """
        self.assertIsInstance(result, WireError)
        self.assertEqual((result.reason, result.id, result.hasId), (reason, requestId, hasId))

    def test_valid(self) -> None:
        """
        A frame with a Topic and a Content string becomes a Message without an Id.
        """
        result = wire.parsePublish(frame({"Topic": "news", "Content": "hello"}))
        self.assertEqual(result, Message("news", "hello", None, False))

    def test_validNonASCII(self) -> None:
        """
        Non-ASCII topics and contents are accepted as they are.
        """
        result = wire.parsePublish(frame({"Topic": "nöuvelles", "Content": "héllo ☃"}))
        self.assertEqual(result, Message("nöuvelles", "héllo ☃"))

    def test_idOfEachScalarType(self) -> None:
        """
        An Id may be any JSON scalar (string, integer, float, boolean, null) and is kept.
        """
        for requestId in ["abc", "", 7, -3, 1.5, True, False, None]:
            result = wire.parsePublish(frame({"Topic": "t", "Content": "c", "Id": requestId}))
            self.assertIsInstance(result, Message)
            self.assertEqual((result.id, result.hasId), (requestId, True), requestId)
            self.assertIs(type(result.id), type(requestId))

    def test_nullIdDiffersFromNoId(self) -> None:
        """
        C{"Id": null} is an Id (it is echoed back), unlike a frame without an Id.
        """
        withNull = wire.parsePublish(frame({"Topic": "t", "Content": "c", "Id": None}))
        without = wire.parsePublish(frame({"Topic": "t", "Content": "c"}))
        self.assertTrue(withNull.hasId)
        self.assertFalse(without.hasId)

    def test_idAtMaximumLength(self) -> None:
        """
        A string Id of exactly MAX_ID_LENGTH characters is accepted.
        """
        requestId = "i" * MAX_ID_LENGTH
        result = wire.parsePublish(frame({"Topic": "t", "Content": "c", "Id": requestId}))
        self.assertEqual(result.id, requestId)

    def test_notJSON(self) -> None:
        """
        A frame that is not JSON is an error, not an exception.
        """
        self.assertError(wire.parsePublish(b"{not json"), "frame is not valid JSON")

    def test_invalidUTF8(self) -> None:
        """
        A text frame that is not UTF-8 is reported as invalid JSON.
        """
        self.assertError(wire.parsePublish(b'{"Topic": "\xff"}'), "frame is not valid JSON")

    def test_notAnObject(self) -> None:
        """
        Valid JSON that is not an object (list, string, number, null) is refused.
        """
        for payload in [b"[]", b'"text"', b"3", b"null"]:
            self.assertError(wire.parsePublish(payload), "frame must be a JSON object")

    def test_binaryFrame(self) -> None:
        """
        Binary frames are refused even when their bytes are a valid message.
        """
        result = wire.parsePublish(frame({"Topic": "t", "Content": "c"}), isBinary=True)
        self.assertError(result, "binary frames are not supported; send JSON text")

    def test_missingTopic(self) -> None:
        """
        A frame without a Topic is refused, with its Id.
        """
        result = wire.parsePublish(frame({"Content": "c", "Id": 1}))
        self.assertError(result, "Topic must be a string", 1, True)

    def test_topicNotAString(self) -> None:
        """
        A Topic that is not a string is refused.
        """
        result = wire.parsePublish(frame({"Topic": 5, "Content": "c"}))
        self.assertError(result, "Topic must be a string")

    def test_emptyTopic(self) -> None:
        """
        An empty Topic is refused, with its Id.
        """
        result = wire.parsePublish(frame({"Topic": "", "Content": "c", "Id": "x"}))
        self.assertError(result, "Topic must not be empty", "x", True)

    def test_topicAtMaximumLength(self) -> None:
        """
        A Topic of exactly MAX_TOPIC_LENGTH characters is accepted.
        """
        topic = "t" * MAX_TOPIC_LENGTH
        self.assertEqual(wire.parsePublish(frame({"Topic": topic, "Content": "c"})).topic, topic)

    def test_overLongTopic(self) -> None:
        """
        A Topic one character over MAX_TOPIC_LENGTH is refused, with the Id.
        """
        result = wire.parsePublish(frame({"Topic": "t" * (MAX_TOPIC_LENGTH + 1), "Content": "c", "Id": 2}))
        self.assertError(result, f"Topic is longer than {MAX_TOPIC_LENGTH} characters", 2, True)

    def test_topicWithWhitespaceOrControlCharacters(self) -> None:
        """
        Topics with spaces, tabs, newlines, Unicode spaces or C0/C1 control characters are refused.
        """
        for topic in ["a b", "a\tb", "a\nb", "a\u00a0b", "a\u2003b", "a\x00b", "a\x1bb", "a\x7fb", "a\x80b", "a\x9fb"]:
            result = wire.parsePublish(frame({"Topic": topic, "Content": "c", "Id": 3}))
            self.assertError(result, "Topic must not contain whitespace or control characters", 3, True)

    def test_reservedTopicCharacters(self) -> None:
        """
        C{*} and C{>} are reserved for wildcards and refused in a published Topic.
        """
        for topic in ["*", "a.*", ">", "a.>"]:
            result = wire.parsePublish(frame({"Topic": topic, "Content": "c", "Id": 4}))
            self.assertError(result, "Topic must not contain '*' or '>' (reserved for wildcards)", 4, True)

    def test_contentNotAString(self) -> None:
        """
        A Content that is missing or not a string is refused, with the Id.
        """
        for message in [{"Topic": "t"}, {"Topic": "t", "Content": 1}, {"Topic": "t", "Content": {"a": 1}},
                        {"Topic": "t", "Content": None}]:
            result = wire.parsePublish(frame({**message, "Id": 5}))
            self.assertError(result, "Content must be a string", 5, True)

    def test_unpairedSurrogate(self) -> None:
        """
        JSON may escape half of a surrogate pair (C{"\\ud800"}); such text has no
        UTF-8 form, so it is refused in a Topic or a Content instead of failing
        when the message is sent on.
        """
        self.assertError(
            wire.parsePublish(b'{"Topic": "news", "Content": "a\\ud800b", "Id": 1}'),
            "Content must be valid Unicode (it has an unpaired surrogate escape)", 1, True,
        )
        self.assertError(
            wire.parsePublish(b'{"Topic": "n\\udfffs", "Content": "x"}'),
            "Topic must be valid Unicode (it has an unpaired surrogate escape)",
        )
        self.assertEqual(wire.parsePublish(b'{"Topic": "n", "Content": "\\ud83d\\ude00"}').content, "\U0001f600")

    def test_idObjectOrList(self) -> None:
        """
        An Id that is an object or a list is refused, and is not echoed back.
        """
        for requestId in [{"a": 1}, [1, 2]]:
            result = wire.parsePublish(frame({"Topic": "t", "Content": "c", "Id": requestId}))
            self.assertError(result, "Id must be a string or a finite number")

    def test_idNotFinite(self) -> None:
        """
        An Id that is NaN or infinite is refused: echoing it would not be valid JSON.
        """
        for literal in [b"NaN", b"Infinity", b"-Infinity", b"1e400"]:
            result = wire.parsePublish(b'{"Topic": "t", "Content": "c", "Id": ' + literal + b"}")
            self.assertError(result, "Id must be a string or a finite number")

    def test_overLongId(self) -> None:
        """
        A string Id longer than MAX_ID_LENGTH is refused and not echoed back.
        """
        result = wire.parsePublish(frame({"Topic": "t", "Content": "c", "Id": "i" * (MAX_ID_LENGTH + 1)}))
        self.assertError(result, f"Id is longer than {MAX_ID_LENGTH} characters")

    def test_idUnpairedSurrogate(self) -> None:
        """
        A string Id holding half a surrogate pair is refused like such a Topic or
        Content, and not echoed back: it has no UTF-8 form, so no Ack or Error
        carrying it could be encoded.
        """
        for requestId in [b'"\\ud800"', b'"abc\\udfff"', b'"\\ude00\\ud83d"']:
            result = wire.parsePublish(b'{"Topic": "t", "Content": "c", "Id": ' + requestId + b"}")
            self.assertError(result, "Id must be valid Unicode (it has an unpaired surrogate escape)")
            result.encode()
        self.assertEqual(wire.parsePublish(b'{"Topic": "t", "Content": "c", "Id": "\\ud83d\\ude00"}').id, "\U0001f600")

    def test_idErrorBeforeTopicError(self) -> None:
        """
        With both a bad Id and a bad Topic, the Id error is reported (no Id to attach).
        """
        result = wire.parsePublish(frame({"Topic": "", "Content": "c", "Id": [1]}))
        self.assertError(result, "Id must be a string or a finite number")


class ParsePushTests(SynchronousTestCase):
    """
    Tests for L{wire.parsePush}: the Id rules hold in every form of a push frame.
    """

    surrogateId = "Id must be valid Unicode (it has an unpaired surrogate escape)"

    def test_idUnpairedSurrogate(self) -> None:
        """
        An Id with an unpaired surrogate is refused (without an Id) in a message
        object, in an array of them and in a batch entry, and the messages around it
        are still read.
        """
        bad = b'"\\ud800"'
        self.assertEqual(
            wire.parsePush(b'{"Topic": "t", "Content": "c", "Id": ' + bad + b"}"), [WireError(self.surrogateId)]
        )
        self.assertEqual(
            wire.parsePush(b'[{"Topic": "t", "Content": "c", "Id": ' + bad + b'}, {"Topic": "t", "Content": "d", "Id": 2}]'),
            [WireError(self.surrogateId), Message("t", "d", 2, True)],
        )
        self.assertEqual(
            wire.parsePush(b'{"Messages": [[' + bad + b', "t", "c"], [3, "t", "e"]]}'),
            [WireError(self.surrogateId), Message("t", "e", 3, True)],
        )

    def test_batchEntryIdRules(self) -> None:
        """
        A batch entry's Id follows the same rules as a message object's.
        """
        for requestId, reason in [
            ("i" * (MAX_ID_LENGTH + 1), f"Id is longer than {MAX_ID_LENGTH} characters"),
            ([1], "Id must be a string or a finite number"),
            ({}, "Id must be a string or a finite number"),
        ]:
            self.assertEqual(wire.parsePush(frame({"Messages": [[requestId, "t", "c"]]})), [WireError(reason)])
        self.assertEqual(wire.parsePush(b'{"Messages": [[NaN, "t", "c"]]}'),
                         [WireError("Id must be a string or a finite number")])


class DecodeJSONTests(SynchronousTestCase):
    """
    Tests for L{wire.decodeJSON} and how every parser reads deeply nested frames.
    """

    def test_values(self) -> None:
        """
        Any JSON value decodes to itself; what is not JSON is a WireError.
        """
        for value in [{"a": [1, None]}, [], "x", 1.5, None, True]:
            self.assertEqual(wire.decodeJSON(frame(value)), value)
        for payload in [b"", b"{", b"\xff", b"[1,]"]:
            self.assertEqual(wire.decodeJSON(payload), WireError("frame is not valid JSON"))

    def test_deepNesting(self) -> None:
        """
        JSON nested deeper than the recursion limit makes C{json.loads} raise
        RecursionError: it is an ordinary bad frame for decodeJSON and every parser,
        in any field, never an exception.
        """
        deep = b"[" * 100_000 + b"]" * 100_000
        deepObject = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
        tooDeep = WireError("frame is nested too deeply")
        self.assertEqual(wire.decodeJSON(deep), tooDeep)
        self.assertEqual(wire.decodeJSON(deepObject), tooDeep)
        for parse in (wire.parsePublish, wire.parsePush, wire.parseSubscribe):
            self.assertEqual(parse(deepObject), tooDeep, parse)
            for field in (b"Topic", b"Content", b"Id"):
                self.assertEqual(parse(b'{"Topic": "t", "Content": "sub", "Id": 1, "' + field + b'": ' + deep + b"}"),
                                 tooDeep, (parse, field))
        self.assertEqual(wire.parsePublish(deep), tooDeep)
        self.assertEqual(wire.parsePush(deep), tooDeep)
        self.assertEqual(wire.parsePush(b'{"Messages": [[1, "t", ' + deep + b"]]}"), tooDeep)


class ParseMessageObjectTests(SynchronousTestCase):
    """
    Tests for L{wire.parseMessageObject}, used for messages inside batches.
    """

    def test_notADict(self) -> None:
        """
        A decoded value that is not an object is refused.
        """
        result = wire.parseMessageObject(["t", "c"])
        self.assertEqual(result, WireError("each message must be a JSON object"))

    def test_valid(self) -> None:
        """
        A decoded object with Topic and Content becomes a Message.
        """
        self.assertEqual(wire.parseMessageObject({"Topic": "t", "Content": "c", "Id": 9}), Message("t", "c", 9, True))


class ParseSubscribeTests(SynchronousTestCase):
    """
    Tests for L{wire.parseSubscribe}.
    """

    def test_jsonSub(self) -> None:
        """
        C{{"Topic": t, "Content": "sub"}} subscribes to C{t}.
        """
        self.assertEqual(wire.parseSubscribe(frame({"Topic": "t", "Content": "sub"})), Subscription("t", True))

    def test_jsonUnsub(self) -> None:
        """
        C{{"Topic": t, "Content": "unsub"}} unsubscribes, keeping the Id.
        """
        result = wire.parseSubscribe(frame({"Topic": "t", "Content": "unsub", "Id": "r1"}))
        self.assertEqual(result, Subscription("t", False, "r1", True))

    def test_jsonWithSurroundingWhitespace(self) -> None:
        """
        A JSON command with whitespace around it is still read as JSON.
        """
        result = wire.parseSubscribe(b"  \n" + frame({"Topic": "t", "Content": "sub", "Id": 1}) + b" \r\n")
        self.assertEqual(result, Subscription("t", True, 1, True))

    def test_textSub(self) -> None:
        """
        The plain-text C{sub TOPIC} subscribes.
        """
        self.assertEqual(wire.parseSubscribe(b"sub news"), Subscription("news", True))

    def test_textUnsub(self) -> None:
        """
        The plain-text C{unsub TOPIC} unsubscribes.
        """
        self.assertEqual(wire.parseSubscribe(b"unsub news"), Subscription("news", False))

    def test_textWithSurroundingWhitespace(self) -> None:
        """
        Whitespace around and between the words of a text command is ignored.
        """
        self.assertEqual(wire.parseSubscribe(b"  sub \t news \r\n"), Subscription("news", True))
        self.assertEqual(wire.parseSubscribe(b"\nunsub  news  "), Subscription("news", False))

    def test_unknownCommand(self) -> None:
        """
        A text command other than sub/unsub is refused with a hint of the syntax.
        """
        for payload in [b"subscribe news", b"SUB news", b"pub news"]:
            result = wire.parseSubscribe(payload)
            self.assertIsInstance(result, WireError)
            self.assertIn("unknown command", result.reason)
            self.assertIn("sub TOPIC", result.reason)
            self.assertFalse(result.hasId)

    def test_wrongWordCount(self) -> None:
        """
        A text command with no topic, or more than one, is refused.
        """
        for payload in [b"", b"   ", b"sub", b"sub a b", b"unsub a b c"]:
            result = wire.parseSubscribe(payload)
            self.assertIsInstance(result, WireError, payload)
            self.assertIn("unknown command", result.reason)

    def test_invalidUTF8(self) -> None:
        """
        A text command that is not UTF-8 is refused.
        """
        self.assertEqual(wire.parseSubscribe(b"sub \xff\xfe"), WireError("frame is not valid UTF-8"))

    def test_badTopicText(self) -> None:
        """
        A text command's topic is validated like a published one.
        """
        self.assertEqual(
            wire.parseSubscribe(b"sub a*"), WireError("Topic must not contain '*' or '>' (reserved for wildcards)")
        )
        self.assertEqual(
            wire.parseSubscribe(b"sub " + b"t" * (MAX_TOPIC_LENGTH + 1)),
            WireError(f"Topic is longer than {MAX_TOPIC_LENGTH} characters"),
        )

    def test_badTopicJSON(self) -> None:
        """
        A JSON command's topic is validated, and the error carries its Id.
        """
        result = wire.parseSubscribe(frame({"Topic": "a b", "Content": "sub", "Id": 7}))
        self.assertEqual(result, WireError("Topic must not contain whitespace or control characters", 7, True))
        result = wire.parseSubscribe(frame({"Content": "sub", "Id": 8}))
        self.assertEqual(result, WireError("Topic must be a string", 8, True))

    def test_jsonUnknownCommand(self) -> None:
        """
        A JSON command whose Content is not sub/unsub is refused, with its Id.
        """
        for content in ["subscribe", "", None, 1]:
            result = wire.parseSubscribe(frame({"Topic": "t", "Content": content, "Id": "q"}))
            self.assertEqual(result, WireError('Content must be "sub" or "unsub"', "q", True))

    def test_jsonCommandNotAString(self) -> None:
        """
        A Content that is an object or an array (unhashable) is refused like any
        other unknown command, with the Id, instead of raising TypeError.
        """
        for content in [{}, {"sub": 1}, [], ["sub"], 1.5, True]:
            result = wire.parseSubscribe(frame({"Topic": "t", "Content": content, "Id": "q"}))
            self.assertEqual(result, WireError('Content must be "sub" or "unsub"', "q", True), content)

    def test_jsonIdUnpairedSurrogate(self) -> None:
        """
        A subscribe with an Id holding an unpaired surrogate is refused without it.
        """
        result = wire.parseSubscribe(b'{"Topic": "t", "Content": "sub", "Id": "\\ud800"}')
        self.assertEqual(result, WireError("Id must be valid Unicode (it has an unpaired surrogate escape)"))

    def test_jsonNotJSON(self) -> None:
        """
        A frame starting with C{{} that is not JSON is refused as JSON, not as text.
        """
        self.assertEqual(wire.parseSubscribe(b"{sub t"), WireError("frame is not valid JSON"))

    def test_jsonBadId(self) -> None:
        """
        A JSON command with an unusable Id is refused without an Id.
        """
        self.assertEqual(
            wire.parseSubscribe(frame({"Topic": "t", "Content": "sub", "Id": {}})),
            WireError("Id must be a string or a finite number"),
        )

    def test_binaryFrame(self) -> None:
        """
        Binary frames are refused, even when they hold a valid text command.
        """
        self.assertEqual(
            wire.parseSubscribe(b"sub t", isBinary=True),
            WireError("binary frames are not supported; send JSON text"),
        )


class EncodeTests(SynchronousTestCase):
    """
    Tests for L{wire.encode}, L{wire.ack} and L{WireError.encode}.
    """

    def test_compact(self) -> None:
        """
        Frames have no spaces after separators.
        """
        self.assertEqual(wire.encode({"Topic": "t", "Content": "c"}), b'{"Topic":"t","Content":"c"}')

    def test_utf8NotEscaped(self) -> None:
        """
        Non-ASCII text is sent as UTF-8 bytes, not as C{\\u} escapes.
        """
        encoded = wire.encode({"Content": "é☃"})
        self.assertEqual(encoded, '{"Content":"é☃"}'.encode())
        self.assertNotIn(b"\\u", encoded)

    def test_deliverySameAsEncode(self) -> None:
        """
        The hand-built delivery frame is byte for byte what encoding the dict gives,
        whatever the text holds (quotes, backslashes, controls, non-ASCII).
        """
        for topic, content in [("news", "hi"), ("t\u00e9", 'q"uo\\te\n\x00\u2028 \U0001f600'), ("x", "")]:
            self.assertEqual(
                wire.delivery(topic, content, 12345678901, "ep\"och"),
                wire.encode({"Topic": topic, "Content": content, "Offset": 12345678901, "Epoch": 'ep"och'}),
            )

    def test_ack(self) -> None:
        """
        An ack frame echoes the request's Id with its JSON type.
        """
        self.assertEqual(wire.ack("r1"), b'{"Ack":"r1"}')
        self.assertEqual(wire.ack(3), b'{"Ack":3}')
        self.assertEqual(wire.ack(None), b'{"Ack":null}')

    def test_errorWithoutId(self) -> None:
        """
        An error without an Id encodes as C{{"Error": reason}} only.
        """
        self.assertEqual(WireError("bad").encode(), b'{"Error":"bad"}')

    def test_errorWithId(self) -> None:
        """
        An error with an Id (even null) carries it, so the client can match it.
        """
        self.assertEqual(json.loads(WireError("bad", 5, True).encode()), {"Error": "bad", "Id": 5})
        self.assertEqual(json.loads(WireError("bad", None, True).encode()), {"Error": "bad", "Id": None})

    def test_errorFromParsedFrameRoundTrip(self) -> None:
        """
        The error for a bad frame with a readable Id encodes with that Id.
        """
        error = wire.parsePublish(frame({"Topic": "", "Content": "c", "Id": "abc"}))
        self.assertEqual(json.loads(error.encode()), {"Error": "Topic must not be empty", "Id": "abc"})
