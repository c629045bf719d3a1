"""
Tests for L{wsqueue.wire}: the frame format every endpoint parses and emits.

Parsing must never raise: whatever a client sends becomes a L{Message}, a
L{Subscription} or a L{WireError} value, and errors carry the request's C{Id}
whenever it could be read so that the client can match them.

The frames between the stages are tested here too, each encoder with its parser:
round trips, the exact bytes (a contract between daemons of different versions),
refusal of anything else, and a property test per parser.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import wire
from wsqueue.wire import MAX_ID_LENGTH, MAX_TOPIC_LENGTH, Acked, Deliveries, Message, Refused, Subscription, WireError

from .test_fuzz import SURROGATES, _dumps, bounded, fieldValues, payloads, text


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
        A text command's topic is validated like a JSON one's: a topic or a
        pattern whose wildcards are whole tokens.
        """
        self.assertEqual(
            wire.parseSubscribe(b"sub a*"),
            WireError("'*' and '>' must be whole tokens between dots (as in news.* or news.>), not 'a*'"),
        )
        self.assertEqual(wire.parseSubscribe(b"sub news.>"), Subscription("news.>", True))
        self.assertEqual(wire.parseSubscribe(b'{"Topic": "a.*", "Content": "sub"}'), Subscription("a.*", True))
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


# -- Between the stages ---------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
"""Nested past the recursion limit: json.loads raises RecursionError on it."""


class PushBatchTests(SynchronousTestCase):
    """
    publisher -> msgqueue: L{wire.pushBatch} read by L{wire.parsePush}, and the size
    estimate both stages cut their batches with, L{wire.batchEntryBytes}.
    """

    def test_bytes(self) -> None:
        """
        The batch is one compact JSON object, text as UTF-8, no keys per message.
        """
        self.assertEqual(
            wire.pushBatch([[1, "t", "a"], [2, "u", "\u00e9"]]), '{"Messages":[[1,"t","a"],[2,"u","\u00e9"]]}'.encode()
        )

    def test_roundTrip(self) -> None:
        """
        Every entry comes back as a Message carrying its sequence number as its Id,
        whatever its text holds.
        """
        entries = [[1, "t", "a"], [2, "t\u00e9", 'q"uo\\te\n\x00\u2028 \U0001f600'], [3, "x", ""]]
        self.assertEqual(
            wire.parsePush(wire.pushBatch(entries)), [Message(topic, content, seq, True) for seq, topic, content in entries]
        )

    def test_badEntries(self) -> None:
        """
        An entry that is not [Id, Topic, Content] with a valid topic and a string
        content is refused on its own (with its Id when it has one); the others are read.
        """
        result = wire.parsePush(frame({"Messages": [[1, "t"], "x", [2, "a b", "c"], [3, "t", 4], [4, "t", "ok"]]}))
        self.assertEqual(result, [
            WireError("each entry of Messages must be [Id, Topic, Content]"),
            WireError("each entry of Messages must be [Id, Topic, Content]"),
            WireError("Topic must not contain whitespace or control characters", 2, True),
            WireError("Content must be a string", 3, True),
            Message("t", "ok", 4, True),
        ])
        for bad in ({"Messages": []}, {"Messages": "x"}, []):
            self.assertIsInstance(wire.parsePush(frame(bad)), WireError)
        self.assertEqual(wire.parsePush(b'{"Messages": [[1, "t", ' + DEEP + b"]]}"), WireError("frame is nested too deeply"))

    def test_entryBytesExactOrOver(self) -> None:
        """
        Without escapes, a batch frame is never longer than its empty frame plus the
        estimate of each entry, for the largest numbers a stage uses and for text of
        1 to 4 UTF-8 bytes per character; for ASCII it is close to exact.
        """
        empty = len(wire.pushBatch([]))
        for topic, content in [("t", ""), ("news.sport", "x" * 1000), ("t\u00e9", "\u00e9" * 50),
                               ("\u2603", "\u2603\U0001f600" * 40)]:
            entries = [[2**63 - 1, topic, content]] * 3
            estimate = sum(wire.batchEntryBytes(topic, content) for _ in entries)
            self.assertLessEqual(len(wire.pushBatch(entries)) - empty, estimate, (topic, content))
        self.assertEqual(wire.batchEntryBytes("t", "x" * 1000), 1001 + wire.BATCH_ENTRY_SLACK)

    def test_entryBytesUnderForEscapes(self) -> None:
        """
        Escapes are not counted (so that ASCII text costs two len() calls): a sender
        that must stay within a limit checks the encoded frame too (the publisher does).
        """
        content = '"' * 100 + "\x00" * 100
        self.assertGreater(len(wire.pushBatch([[1, "t", content]])), wire.batchEntryBytes("t", content))


class PushReplyTests(SynchronousTestCase):
    """
    msgqueue -> publisher: L{wire.ack} and L{WireError.encode} read by
    L{wire.parsePushReply}.
    """

    refusal = WireError('expected {"Ack": seq} or {"Error": reason, "Id": seq}')

    def test_roundTrip(self) -> None:
        """
        An Ack gives its number; an Error its reason and number, or no number when
        it has no integer Id.
        """
        self.assertEqual(wire.parsePushReply(wire.ack(7)), Acked(7))
        self.assertEqual(wire.parsePushReply(wire.ack(2**70)), Acked(2**70))
        self.assertEqual(wire.parsePushReply(WireError("disk full", 7, True).encode()), Refused("disk full", 7))
        self.assertEqual(wire.parsePushReply(WireError("\u00e9 bad").encode()), Refused("\u00e9 bad", None))
        for requestId in ["7", 7.0, None, True]:
            self.assertEqual(
                wire.parsePushReply(WireError("no", requestId, True).encode()), Refused("no", None), requestId
            )

    def test_ackWins(self) -> None:
        """
        A frame with an integer Ack is an Ack, whatever else it holds.
        """
        self.assertEqual(wire.parsePushReply(b'{"Ack": 3, "Error": "x"}'), Acked(3))

    def test_refused(self) -> None:
        """
        An Ack that is not an integer (booleans are not), an Error that is not a
        string or has no UTF-8 form, and what is not a JSON object are WireErrors.
        """
        for payload in [b'{"Ack": "3"}', b'{"Ack": true}', b'{"Ack": 3.0}', b'{"Ack": null}', b"{}",
                        b'{"Error": 5, "Id": 1}', b'{"Error": ["x"]}', b'{"Error": "\\ud800", "Id": 1}']:
            self.assertEqual(wire.parsePushReply(payload), self.refusal, payload)
        self.assertEqual(wire.parsePushReply(b"garbage"), WireError("frame is not valid JSON"))
        self.assertEqual(wire.parsePushReply(b"[1]"), WireError("frame must be a JSON object"))
        self.assertIsInstance(wire.parsePushReply(wire.ack(1), isBinary=True), WireError)
        self.assertEqual(wire.parsePushReply(b'{"Error": ' + DEEP + b"}"), WireError("frame is nested too deeply"))


class DeliveriesTests(SynchronousTestCase):
    """
    msgqueue -> subscriber: L{wire.deliveryBatch} and L{wire.delivery} read by
    L{wire.parseDeliveries}.
    """

    def assertRefused(self, payload: bytes) -> None:
        result = wire.parseDeliveries(payload)
        self.assertIsInstance(result, WireError, payload)

    def test_batchBytes(self) -> None:
        """
        The batch frame is what encoding the dict gives, C{Epoch} first.
        """
        messages = [[1, "t", "a"], [2, "u", "\u00e9\n"]]
        self.assertEqual(wire.deliveryBatch("e1", messages), wire.encode({"Epoch": "e1", "Messages": messages}))
        self.assertEqual(wire.deliveryBatch("e1", [(1, "t", "a")]), b'{"Epoch":"e1","Messages":[[1,"t","a"]]}')

    def test_roundTrip(self) -> None:
        """
        A batch and a single message come back as the epoch and [offset, topic,
        content] entries, in order, whatever the text holds.
        """
        messages = [[1, "t", "a"], [2, "t\u00e9", 'q"uo\\te\n\x00\u2028 \U0001f600'], [2**62, "x", ""]]
        self.assertEqual(wire.parseDeliveries(wire.deliveryBatch("e\u00e9", messages)), Deliveries("e\u00e9", messages))
        self.assertEqual(wire.parseDeliveries(wire.delivery("t", "c\u00e9", 5, "e1")), Deliveries("e1", [[5, "t", "c\u00e9"]]))
        self.assertEqual(wire.parseDeliveries(wire.deliveryBatch("e1", [])), Deliveries("e1", []))

    def test_badEpoch(self) -> None:
        """
        The epoch must be a string with a UTF-8 form, in both forms.
        """
        for epoch in [b"", b'"Epoch": 5, ', b'"Epoch": null, ', b'"Epoch": ["e"], ', b'"Epoch": "\\udc00", ']:
            self.assertRefused(b"{" + epoch + b'"Messages": [[1, "t", "c"]]}')
            self.assertRefused(b"{" + epoch + b'"Topic": "t", "Content": "c", "Offset": 1}')

    def test_badMessages(self) -> None:
        """
        Messages must be a list of [int, str, str] (no booleans, no floats, strings
        with a UTF-8 form); one bad entry refuses the frame.
        """
        for messages in [b'"x"', b"{}", b"null", b'[[1, "t"]]', b'[[1, "t", "c", 4]]', b'["abc"]', b'[{"a": 1, "b": 2, "c": 3}]',
                         b'[1]', b'[null]', b'[["1", "t", "c"]]', b'[[true, "t", "c"]]', b'[[1.0, "t", "c"]]',
                         b'[[1, 2, "c"]]', b'[[1, "t", ["c"]]]', b'[[1, "t", null]]', b'[[1, "\\ud800", "c"]]',
                         b'[[1, "t", "c\\udfff"]]', b'[[1, "t", "c"], [2, "t"]]']:
            self.assertRefused(b'{"Epoch": "e1", "Messages": ' + messages + b"}")

    def test_badSingleMessage(self) -> None:
        """
        A single message must have an integer Offset and string Topic and Content.
        """
        for fields in [b'"Topic": "t", "Content": "c"', b'"Topic": "t", "Offset": 1', b'"Content": "c", "Offset": 1',
                       b'"Topic": "t", "Content": "c", "Offset": "1"', b'"Topic": 1, "Content": "c", "Offset": 1',
                       b'"Topic": "t", "Content": {}, "Offset": 1', b'"Topic": "t", "Content": "\\ud800", "Offset": 1']:
            self.assertRefused(b'{"Epoch": "e1", ' + fields + b"}")

    def test_notAFrame(self) -> None:
        """
        What is not a JSON object, a binary frame and deep nesting are WireErrors.
        """
        for payload in [b"", b"garbage", b"[]", b'"x"', b"\xff", b'{"Epoch": "e1", "Messages": ' + DEEP + b"}"]:
            self.assertRefused(payload)
        self.assertIsInstance(wire.parseDeliveries(wire.delivery("t", "c", 1, "e1"), isBinary=True), WireError)


class OffsetAckTests(SynchronousTestCase):
    """
    subscriber -> msgqueue: L{wire.ack} read by L{wire.parseOffsetAck}.
    """

    def test_roundTrip(self) -> None:
        """
        An ack gives back its offset.
        """
        for offset in [0, 1, 2**62, -1]:
            self.assertEqual(wire.parseOffsetAck(wire.ack(offset)), offset)

    def test_refused(self) -> None:
        """
        Anything but an object with an integer Ack is the one Error msgqueue sends back.
        """
        expected = WireError('expected {"Ack": offset}')
        for payload in [b'{"Ack": "one"}', b'{"Ack": true}', b'{"Ack": 1.0}', b'{"Ack": null}', b"{}", b"[1]", b"5",
                        b"garbage", b"\xff", b'{"Ack": ' + DEEP + b"}", DEEP]:
            self.assertEqual(wire.parseOffsetAck(payload), expected, payload)
        self.assertEqual(wire.parseOffsetAck(wire.ack(1), isBinary=True), expected)


# Property tests: strategies from tests/test_fuzz.py, and frames shaped like the links'.

sendableText = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
"""Text with a UTF-8 form (no lone surrogates)."""
offsets = st.integers(min_value=0, max_value=2**63 - 1)


faults = st.one_of(
    st.tuples(sendableText, st.sampled_from(SURROGATES), sendableText).map("".join), text, fieldValues
)
"""What replaces a good field: text with a lone surrogate, any text, any JSON value, deep nesting."""
binary = st.integers(0, 7).map(lambda number: number == 0)
"""A binary frame one time in eight (a parser refuses it outright)."""


@st.composite
def linkObjects(draw) -> dict:
    """
    A frame between the stages as a stage sends it (a delivery batch or single
    message, an Ack, an Error), valid one time in three; else with one field, entry
    or entry item replaced by any value (surrogates, nesting, wrong types) or removed.
    """
    kind = draw(st.sampled_from(["batch", "single", "ack", "error"]))
    if kind == "batch":
        entries = st.tuples(offsets, sendableText, sendableText).map(list)
        obj: dict = {"Epoch": draw(sendableText), "Messages": draw(st.lists(entries, max_size=4))}
    elif kind == "single":
        obj = {"Topic": draw(sendableText), "Content": draw(sendableText), "Offset": draw(offsets), "Epoch": draw(sendableText)}
    elif kind == "ack":
        obj = {"Ack": draw(offsets)}
    else:
        obj = {"Error": draw(sendableText), "Id": draw(offsets)}
    if draw(st.integers(0, 2)):
        slots: list[tuple] = [(obj, key) for key in obj]
        for entry in obj.get("Messages", []):
            slots.append((obj["Messages"], obj["Messages"].index(entry)))
            slots.extend((entry, index) for index in range(3))
        container, slot = draw(st.sampled_from(slots))
        if isinstance(container, dict) and not draw(st.integers(0, 3)):
            del container[slot]
        else:
            container[slot] = draw(faults)
    return obj


@st.composite
def linkPayloads(draw) -> bytes:
    """
    A link frame's bytes (C{\\u} escapes or raw UTF-8, surrogates passed through):
    one of L{linkObjects} three times in four, else any frame a client could send.
    """
    if not draw(st.integers(0, 3)):
        return draw(payloads())
    return _dumps(draw(linkObjects()), ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


class LinkParserFuzzTests(SynchronousTestCase):
    """
    Each parser of a frame between the stages returns a value for any bytes, never
    raises, and what it returns can be used (echoed, sent on to clients) without
    raising either; and each encoder's frames parse back to what was encoded.
    """

    @bounded
    @given(linkPayloads(), binary)
    def test_parseDeliveries(self, payload: bytes, isBinary: bool) -> None:
        """
        Deliveries hold a string epoch and [int, str, str] entries that encode to a
        client's frame and to an ack; anything else is a WireError.
        """
        result = wire.parseDeliveries(payload, isBinary)
        if isinstance(result, WireError):
            json.loads(result.encode())
            return
        self.assertIsInstance(result, Deliveries)
        self.assertIs(type(result.epoch), str)
        json.loads(wire.deliveryBatch(result.epoch, result.messages))
        for offset, topic, content in result.messages:
            self.assertEqual((type(offset), type(topic), type(content)), (int, str, str))
            json.loads(wire.delivery(topic, content, offset, result.epoch))
            json.loads(wire.ack(offset))

    @bounded
    @given(linkPayloads(), binary)
    def test_parsePushReply(self, payload: bytes, isBinary: bool) -> None:
        """
        A reply is an Ack with an integer, a refusal whose reason can be passed on to
        the client in an Error, or a WireError.
        """
        result = wire.parsePushReply(payload, isBinary)
        if isinstance(result, Acked):
            self.assertIs(type(result.upTo), int)
        elif isinstance(result, Refused):
            self.assertIn(type(result.seq), (int, type(None)))
            json.loads(WireError(result.reason, "client-id", True).encode())
        else:
            self.assertIsInstance(result, WireError)
            json.loads(result.encode())

    @bounded
    @given(linkPayloads(), binary)
    def test_parseOffsetAck(self, payload: bytes, isBinary: bool) -> None:
        """
        An offset ack is an integer or the one WireError.
        """
        result = wire.parseOffsetAck(payload, isBinary)
        if isinstance(result, WireError):
            self.assertEqual(result, WireError('expected {"Ack": offset}'))
        else:
            self.assertIs(type(result), int)

    @bounded
    @given(sendableText, st.lists(st.tuples(offsets, sendableText, sendableText).map(list), max_size=5))
    def test_deliveriesRoundTrip(self, epoch: str, messages: list[list]) -> None:
        """
        Any batch and any single message parse back to what was encoded.
        """
        self.assertEqual(wire.parseDeliveries(wire.deliveryBatch(epoch, messages)), Deliveries(epoch, messages))
        for offset, topic, content in messages:
            self.assertEqual(wire.parseDeliveries(wire.delivery(topic, content, offset, epoch)),
                             Deliveries(epoch, [[offset, topic, content]]))

    @bounded
    @given(offsets, sendableText)
    def test_repliesRoundTrip(self, number: int, reason: str) -> None:
        """
        Acks and Errors parse back to their number and reason, for both readers.
        """
        self.assertEqual(wire.parsePushReply(wire.ack(number)), Acked(number))
        self.assertEqual(wire.parseOffsetAck(wire.ack(number)), number)
        self.assertEqual(wire.parsePushReply(WireError(reason, number, True).encode()), Refused(reason, number))

    @bounded
    @given(st.lists(st.tuples(offsets, st.sampled_from(["t", "news.sport", "t\u00e9"]), sendableText).map(list),
                    min_size=1, max_size=5))
    def test_pushBatchRoundTrip(self, entries: list[list]) -> None:
        """
        A publisher's batch parses back to its messages, numbered; and within the
        size estimate when its text has nothing to escape.
        """
        self.assertEqual(wire.parsePush(wire.pushBatch(entries)),
                         [Message(topic, content, seq, True) for seq, topic, content in entries])
        if not any(character in content for _, _, content in entries for character in '"\\' + "".join(map(chr, range(32)))):
            estimate = sum(wire.batchEntryBytes(topic, content) for _, topic, content in entries)
            self.assertLessEqual(len(wire.pushBatch(entries)) - len(wire.pushBatch([])), estimate)
