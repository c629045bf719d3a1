# -*- test-case-name: tests.test_wire -*-
"""
The frame format shared by every wsqueue endpoint.

The public endpoints speak the Go system's format (C{{"Topic": t, "Content": c}}) plus
optional C{"Id"} for acknowledgements.  Parsing never raises: a bad frame becomes a
L{WireError} value that the caller turns into an C{{"Error": ...}} reply, so nothing a
client sends can surface as a traceback.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

MAX_TOPIC_LENGTH = 256
MAX_ID_LENGTH = 128

_BAD_TOPIC_CHARACTERS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_RESERVED_TOPIC_CHARACTERS = re.compile(r"[*>]")

JSONId = str | int | float | bool | None

VALID_TOPICS_REMEMBERED = 10_000
_validTopics: set[str] = set()
"""Topics that passed L{checkTopic} lately: every message names one, and most name few."""


@dataclass(frozen=True, slots=True)
class WireError:
    """
    A frame that could not be accepted, with the reason the client is told.

    @ivar id: the request's C{"Id"} when it could be read, so the error can be matched.
    """

    reason: str
    id: JSONId = None
    hasId: bool = False

    def encode(self) -> bytes:
        """
        The C{{"Error": reason}} frame (with C{"Id"} when the request had one).
        """
        if self.hasId:
            return encode({"Error": self.reason, "Id": self.id})
        return encode({"Error": self.reason})


@dataclass(frozen=True, slots=True)
class Message:
    """
    One published message: what publishers send and subscribers receive.
    """

    topic: str
    content: str
    id: JSONId = None
    hasId: bool = False


@dataclass(frozen=True, slots=True)
class Subscription:
    """
    A subscriber client's request to start (C{subscribe=True}) or stop a topic.
    """

    topic: str
    subscribe: bool
    id: JSONId = None
    hasId: bool = False


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""One encoder for every frame: json.dumps with options builds a new one per call."""


def encode(obj: Any) -> bytes:
    """
    Encode one JSON frame compactly, keeping non-ASCII text as UTF-8.
    """
    return _encoder.encode(obj).encode("utf-8")


_string = encode_basestring
"""JSON-encodes one str exactly as L{encode} does (C{ensure_ascii=False}), in C."""


def delivery(topic: str, content: str, offset: int, epoch: str) -> bytes:
    """
    The frame a subscriber's client gets for one message: the same bytes as
    C{encode({"Topic": topic, "Content": content, "Offset": offset, "Epoch": epoch})},
    built without walking a dict (the fan-out does this once per message).
    """
    return f'{{"Topic":{_string(topic)},"Content":{_string(content)},"Offset":{offset},"Epoch":{_string(epoch)}}}'.encode()


def ack(requestId: JSONId) -> bytes:
    """
    The C{{"Ack": id}} frame that tells a client its request took effect.
    """
    return encode({"Ack": requestId})


def checkTopic(topic: object) -> str | None:
    """
    Say what is wrong with C{topic}, or return L{None} when it is a valid topic.

    Topics are 1 to L{MAX_TOPIC_LENGTH} characters without whitespace or control
    characters; C{*} and C{>} are reserved for wildcard subscriptions.
    """
    if type(topic) is str and topic in _validTopics:
        return None
    if not isinstance(topic, str):
        return "Topic must be a string"
    if not topic:
        return "Topic must not be empty"
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"Topic is longer than {MAX_TOPIC_LENGTH} characters"
    if _BAD_TOPIC_CHARACTERS.search(topic):
        return "Topic must not contain whitespace or control characters"
    if _RESERVED_TOPIC_CHARACTERS.search(topic):
        return "Topic must not contain '*' or '>' (reserved for wildcards)"
    problem = _unpairedSurrogate("Topic", topic)
    if problem is None:
        if len(_validTopics) >= VALID_TOPICS_REMEMBERED:
            _validTopics.clear()
        _validTopics.add(topic)
    return problem


def _unpairedSurrogate(name: str, text: str) -> str | None:
    # JSON's \ud800 escapes decode to text that has no UTF-8 form: refuse it here,
    # not when the message is encoded again on its way out.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} must be valid Unicode (it has an unpaired surrogate escape)"
    return None


def decodeJSON(payload: bytes) -> object:
    """
    The JSON value in C{payload}, or a L{WireError} saying why there is none; never
    raises.  Every parser here reads frames through it, and so should any code that
    reads a peer's frames (the links' replies from msgqueue too).

    C{json.loads} raises L{RecursionError}, not L{ValueError}, on arrays or objects
    nested deeper than the interpreter's recursion limit (a few kilobytes of
    C{[[[[...} do it): that is an ordinary bad frame here, not a traceback.
    """
    try:
        return json.loads(payload)
    except RecursionError:
        return WireError("frame is nested too deeply")
    except ValueError:  # UnicodeDecodeError is one too
        return WireError("frame is not valid JSON")


def _decodeText(payload: bytes, isBinary: bool) -> object:
    # The decoded text frame, or the WireError saying why there is none.
    if isBinary:
        return WireError("binary frames are not supported; send JSON text")
    return decodeJSON(payload)


def _decodeObject(payload: bytes, isBinary: bool) -> dict[str, Any] | WireError:
    obj = _decodeText(payload, isBinary)
    if isinstance(obj, WireError):
        return obj
    if not isinstance(obj, dict):
        return WireError("frame must be a JSON object")
    return obj


def checkId(requestId: object) -> str | None:
    """
    Say what is wrong with a request's C{Id}, or return L{None} when it can be echoed
    back: a JSON scalar; a string of at most L{MAX_ID_LENGTH} characters that has a
    UTF-8 form; a finite number.  Every parser that reads an Id checks it here, so
    that the L{ack} or L{WireError} echoing it later cannot fail to encode.
    """
    if isinstance(requestId, str):
        if len(requestId) > MAX_ID_LENGTH:
            return f"Id is longer than {MAX_ID_LENGTH} characters"
        return _unpairedSurrogate("Id", requestId)
    if isinstance(requestId, (dict, list)) or (isinstance(requestId, float) and not math.isfinite(requestId)):
        # Python's json reads NaN/Infinity (and 1e400 as inf); echoing them is not JSON.
        return "Id must be a string or a finite number"
    return None


def _readId(obj: dict[str, Any]) -> tuple[JSONId, bool, WireError | None]:
    # An Id that cannot be echoed makes an error without one.
    if "Id" not in obj:
        return None, False, None
    requestId = obj["Id"]
    problem = checkId(requestId)
    if problem is not None:
        return None, False, WireError(problem)
    return requestId, True, None


def parseMessageObject(obj: object) -> Message | WireError:
    """
    Validate one decoded message object (C{Topic}, C{Content}, optional C{Id}).
    """
    if not isinstance(obj, dict):
        return WireError("each message must be a JSON object")
    requestId, hasId, error = _readId(obj)
    if error is not None:
        return error
    problem = checkTopic(obj.get("Topic"))
    if problem is None:
        content = obj.get("Content")
        problem = _unpairedSurrogate("Content", content) if isinstance(content, str) else "Content must be a string"
    if problem is not None:
        return WireError(problem, requestId, hasId)
    return Message(obj["Topic"], obj["Content"], requestId, hasId)


def parsePublish(payload: bytes, isBinary: bool = False) -> Message | WireError:
    """
    Parse a frame sent to C{/publish}: C{{"Topic": t, "Content": c, "Id"?: id}}.
    """
    obj = _decodeObject(payload, isBinary)
    if isinstance(obj, WireError):
        return obj
    return parseMessageObject(obj)


def parsePush(payload: bytes, isBinary: bool = False) -> list[Message | WireError] | WireError:
    """
    Parse a frame sent to msgqueue's C{/pushmsg}: one message object, a non-empty
    array of them, or a publisher's batch C{{"Messages": [[Id, Topic, Content], ...]}}
    (one JSON string per text, no keys repeated per message).  Each message is
    checked on its own, so one bad message does not take the others down with it.
    """
    obj = _decodeText(payload, isBinary)
    if isinstance(obj, WireError):
        return obj
    if isinstance(obj, dict):
        if "Messages" not in obj:
            return [parseMessageObject(obj)]
        entries = obj["Messages"]
        if isinstance(entries, list) and entries:
            return [_parseBatchEntry(entry) for entry in entries]
    elif isinstance(obj, list) and obj:
        return [parseMessageObject(item) for item in obj]
    return WireError('frame must be a message object, a non-empty array of them, or {"Messages": [[Id, Topic, Content], ...]}')


def _parseBatchEntry(entry: object) -> Message | WireError:
    if not (isinstance(entry, list) and len(entry) == 3):
        return WireError("each entry of Messages must be [Id, Topic, Content]")
    requestId, topic, content = entry
    problem = checkId(requestId)
    if problem is not None:
        return WireError(problem)
    problem = checkTopic(topic)
    if problem is None:
        problem = _unpairedSurrogate("Content", content) if isinstance(content, str) else "Content must be a string"
    if problem is not None:
        return WireError(problem, requestId, True)
    return Message(topic, content, requestId, True)


_COMMANDS = {"sub": True, "unsub": False}


def parseSubscribe(payload: bytes, isBinary: bool = False) -> Subscription | WireError:
    """
    Parse a frame sent to C{/subscribe}.

    Accepts the Go system's C{{"Topic": t, "Content": "sub"}} (or C{"unsub"}) and the
    plain-text C{sub TOPIC} / C{unsub TOPIC} that a person types into any client.
    """
    stripped = payload.strip()
    if not isBinary and stripped[:1] != b"{":
        return _parseSubscribeText(stripped)
    obj = _decodeObject(payload, isBinary)
    if isinstance(obj, WireError):
        return obj
    requestId, hasId, error = _readId(obj)
    if error is not None:
        return error
    command = obj.get("Content")
    # An object or array is unhashable: looking it up in a dict raises TypeError.
    if not isinstance(command, str) or command not in _COMMANDS:
        return WireError('Content must be "sub" or "unsub"', requestId, hasId)
    problem = checkTopic(obj.get("Topic"))
    if problem is not None:
        return WireError(problem, requestId, hasId)
    return Subscription(obj["Topic"], _COMMANDS[command], requestId, hasId)


def _parseSubscribeText(line: bytes) -> Subscription | WireError:
    try:
        words = line.decode("utf-8").split()
    except UnicodeDecodeError:
        return WireError("frame is not valid UTF-8")
    if len(words) != 2 or words[0] not in _COMMANDS:
        return WireError(
            'unknown command: send "sub TOPIC", "unsub TOPIC" or '
            '{"Topic": TOPIC, "Content": "sub"}'
        )
    problem = checkTopic(words[1])
    if problem is not None:
        return WireError(problem)
    return Subscription(words[1], _COMMANDS[words[0]])
