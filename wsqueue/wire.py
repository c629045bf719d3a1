# -*- test-case-name: tests.test_wire -*-
"""
The frame format shared by every wsqueue endpoint, and the one place that documents
every frame: what clients send and get, and what the stages send each other.

The public endpoints speak the Go system's format (C{{"Topic": t, "Content": c}}) plus
optional C{"Id"} for acknowledgements.  Parsing never raises: a bad frame becomes a
L{WireError} value that the caller turns into an C{{"Error": ...}} reply, so nothing a
client sends can surface as a traceback.

Between the stages (msgqueue's C{/pushmsg} and C{/popmsg}), each frame has its encoder
and its parser here, side by side, documented and tested together (tests/test_wire.py).
These frames are a contract between daemons of possibly different versions: change
them only compatibly.

  - publisher -> msgqueue, a batch C{{"Messages": [[Id, Topic, Content], ...]}}:
    L{pushBatch} / L{parsePush} (which also takes the Go publisher's plain frames), cut
    to size with L{batchEntryBytes};
  - msgqueue -> publisher, C{{"Ack": id}} and C{{"Error": reason, "Id": id}}:
    L{ack} and L{WireError.encode} / L{parsePushReply};
  - msgqueue -> subscriber, C{{"Epoch": e, "Messages": [[Offset, Topic, Content],
    ...]}} or one message as C{{"Topic", "Content", "Offset", "Epoch"}} (also what a
    subscriber's clients get): L{deliveryBatch} and L{delivery} / L{parseDeliveries};
  - subscriber -> msgqueue, C{{"Ack": offset}}: L{ack} / L{parseOffsetAck}.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from wsqueue.topics import checkWildcards

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
        msgqueue's refusals to the publisher are these too (L{parsePushReply}).
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
    since: Since | None = None


@dataclass(frozen=True, slots=True)
class Since:
    """
    Where a client that subscribes again left off: the C{Offset} and C{Epoch} of the
    last message it received (C{"Since"} in a subscribe; see L{wsqueue.subscriber}).
    """

    offset: int
    epoch: str


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
"""One encoder for every frame: json.dumps with options builds a new one per call.  Frames
are built here from fresh lists and dicts, never circular: not checking for cycles
(the same bytes) saves a fifth of a batch's encoding time."""


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

    It is also how msgqueue delivers one message to a consumer that did not ask
    for batches (read by L{parseDeliveries}).
    """
    return f'{{"Topic":{_string(topic)},"Content":{_string(content)},"Offset":{offset},"Epoch":{_string(epoch)}}}'.encode()


def ack(requestId: JSONId) -> bytes:
    """
    The C{{"Ack": id}} frame that tells a client its request took effect.

    Between the stages it is also msgqueue's answer to the publisher (C{id} is the
    last sequence number of a frame, read by L{parsePushReply}) and the subscriber's
    acknowledgement to msgqueue (C{id} is an offset, read by L{parseOffsetAck}).
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
    problem = _checkTopicText(topic)
    if problem is not None or not isinstance(topic, str):
        return problem
    if _RESERVED_TOPIC_CHARACTERS.search(topic):
        return "Topic must not contain '*' or '>' (reserved for wildcards)"
    if len(_validTopics) >= VALID_TOPICS_REMEMBERED:
        _validTopics.clear()
    _validTopics.add(topic)
    return None


def checkPattern(pattern: object) -> str | None:
    """
    Say what is wrong with a subscription's C{Topic}, or return L{None}: a topic,
    or a pattern with NATS's wildcards (C{news.*}, C{news.>}; see L{wsqueue.topics}).
    """
    if type(pattern) is str and pattern in _validTopics:
        return None
    problem = _checkTopicText(pattern)
    if problem is not None or not isinstance(pattern, str):
        return problem
    return checkWildcards(pattern)


def _checkTopicText(topic: object) -> str | None:
    if not isinstance(topic, str):
        return "Topic must be a string"
    if not topic:
        return "Topic must not be empty"
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"Topic is longer than {MAX_TOPIC_LENGTH} characters"
    if _BAD_TOPIC_CHARACTERS.search(topic):
        return "Topic must not contain whitespace or control characters"
    return _unpairedSurrogate("Topic", topic)


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


def parsePublishBody(payload: bytes) -> list[Message] | WireError:
    """
    Parse the body of an HTTP C{POST /publish}: one message object, or a non-empty
    JSON array of them, each checked as on the WebSocket (L{parseMessageObject}).
    All or nothing: the first bad message is the error (C{message N: reason} in an
    array), and none is published.
    """
    obj = decodeJSON(payload)
    if isinstance(obj, WireError):
        return obj
    items = [obj] if isinstance(obj, dict) else obj if isinstance(obj, list) and obj else None
    if items is None:
        return WireError('body must be a message object {"Topic": t, "Content": c} or a non-empty JSON array of them')
    messages = []
    for index, item in enumerate(items):
        message = parseMessageObject(item)
        if isinstance(message, WireError):
            return WireError(message.reason if isinstance(obj, dict) else f"message {index}: {message.reason}")
        messages.append(message)
    return messages


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
    problem = checkPattern(obj.get("Topic"))
    if problem is not None:
        return WireError(problem, requestId, hasId)
    since = None
    if "Since" in obj:
        since = _readSince(obj["Since"])
        if since is None:
            return WireError('Since must be {"Offset": n, "Epoch": e}: an integer of 0 or more and a string',
                             requestId, hasId)
        if not _COMMANDS[command]:
            return WireError("Since is only for sub", requestId, hasId)
    return Subscription(obj["Topic"], _COMMANDS[command], requestId, hasId, since)


def _readSince(value: object) -> Since | None:
    if not isinstance(value, dict) or set(value) != {"Offset", "Epoch"}:
        return None
    offset, epoch = value["Offset"], value["Epoch"]
    if type(offset) is not int or offset < 0 or type(epoch) is not str or len(epoch) > MAX_ID_LENGTH:
        return None
    if _unpairedSurrogate("Epoch", epoch) is not None:
        return None
    return Since(offset, epoch)


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
    problem = checkPattern(words[1])
    if problem is not None:
        return WireError(problem)
    return Subscription(words[1], _COMMANDS[words[0]])


# -- Between the stages --------------------------------------------------------------
#
# Every frame the stages send each other, encoder next to parser.  The parsers read a
# peer that is another wsqueue daemon, maybe of another version, maybe broken: they
# check every type they rely on and return a WireError for anything else, never raise.

BATCH_ENTRY_SLACK = 32
"""What one entry adds to a batch frame besides its two texts: brackets, quotes and
commas (9 bytes) and its number (at most 20 digits), rounded up."""


def batchEntryBytes(topic: str, content: str) -> int:
    """
    About how many bytes one C{[number, topic, content]} entry takes in a batch
    frame (L{pushBatch}, L{deliveryBatch}): the publisher and msgqueue cut their
    batches with it.  It is exact or over for text without escapes (a non-ASCII
    character counts 4, its most in UTF-8), but under for text full of quotes,
    backslashes or control characters (a control character takes 6): a sender
    that must stay within a limit checks the encoded frame too.
    """
    return (
        (len(topic) if topic.isascii() else 4 * len(topic))
        + (len(content) if content.isascii() else 4 * len(content))
        + BATCH_ENTRY_SLACK
    )


def pushBatch(entries: list[list[Any]]) -> bytes:
    """
    publisher -> msgqueue (C{/pushmsg}): C{{"Messages": [[Id, Topic, Content], ...]}},
    one JSON encoding per batch and no keys repeated per message.  C{Id} is the
    publisher's sequence number for its producer name; msgqueue answers with
    L{ack} or an Error (read by L{parsePushReply}).  Parsed by L{parsePush}.
    """
    return _encoder.encode({"Messages": entries}).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Acked:
    """
    msgqueue's C{{"Ack": upTo}} to the publisher: every message numbered up to
    C{upTo} is stored.
    """

    upTo: int


@dataclass(frozen=True, slots=True)
class Refused:
    """
    msgqueue's C{{"Error": reason, "Id"?: seq}} to the publisher: the message
    numbered C{seq} was not stored; L{None} when the Error names no (integer) Id,
    as for a frame msgqueue could not read at all.
    """

    reason: str
    seq: int | None


def parsePushReply(payload: bytes, isBinary: bool = False) -> Acked | Refused | WireError:
    """
    Parse msgqueue's answer on C{/pushmsg}, encoded by L{ack} (C{{"Ack": seq}}) and
    L{WireError.encode} (C{{"Error": reason, "Id": seq}}, C{Id} omitted when the
    error concerns no single message).  C{Ack} must be an integer (the publisher
    numbers its messages) and C{Error} a string with a UTF-8 form (it is passed on
    to the publishing client); anything else is a L{WireError}.
    """
    reply = _decodeObject(payload, isBinary)
    if isinstance(reply, WireError):
        return reply
    upTo = reply.get("Ack")
    if type(upTo) is int:
        return Acked(upTo)
    reason = reply.get("Error")
    if type(reason) is not str or _unpairedSurrogate("Error", reason) is not None:
        return WireError('expected {"Ack": seq} or {"Error": reason, "Id": seq}')
    seq = reply.get("Id")
    return Refused(reason, seq if type(seq) is int else None)


def deliveryBatch(epoch: str, messages: list[list[Any]]) -> bytes:
    """
    msgqueue -> a C{batch=1} consumer (C{/popmsg}): C{{"Epoch": epoch, "Messages":
    [[Offset, Topic, Content], ...]}}, the same messages as that many L{delivery}
    frames in one.  Offsets only compare within one epoch (a new store starts a new
    one).  Parsed by L{parseDeliveries}.
    """
    return _encoder.encode({"Epoch": epoch, "Messages": messages}).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Deliveries:
    """
    The messages of one frame from msgqueue to a consumer, in queue order.

    @ivar messages: C{[offset, topic, content]} lists: an C{int} and two C{str}
        that have a UTF-8 form.
    """

    epoch: str
    messages: list[list[Any]]


_BAD_DELIVERY = WireError(
    'expected {"Epoch": e, "Messages": [[Offset, Topic, Content], ...]} or {"Topic", "Content", "Offset", "Epoch"}'
)


def parseDeliveries(payload: bytes, isBinary: bool = False) -> Deliveries | WireError:
    """
    Parse a frame msgqueue delivers on C{/popmsg}: a batch (L{deliveryBatch}) or
    one message (L{delivery}).  C{Epoch}, C{Topic} and C{Content} must be strings
    with a UTF-8 form (they are sent on to clients), C{Offset} an integer (it is
    acknowledged back); anything else makes the whole frame a L{WireError}.
    """
    frame = _decodeObject(payload, isBinary)
    if isinstance(frame, WireError):
        return frame
    epoch = frame.get("Epoch")
    if type(epoch) is not str or _unpairedSurrogate("Epoch", epoch) is not None:
        return _BAD_DELIVERY
    if "Messages" in frame:
        messages = frame["Messages"]
        if type(messages) is not list:
            return _BAD_DELIVERY
    else:
        messages = [[frame.get("Offset"), frame.get("Topic"), frame.get("Content")]]
    if not _validMessages(messages):
        return _BAD_DELIVERY
    return Deliveries(epoch, messages)


def _validMessages(messages: list) -> bool:
    """
    Whether C{messages} are C{[offset, topic, content]} lists: an C{int} and two
    C{str} that have a UTF-8 form (deliveries and history replies alike).
    """
    try:
        # Unpacking refuses what is not three items long (one loop over the batch:
        # this is the subscriber's per-message path).  What else unpacks into three
        # (a string, an object's keys) fails the type checks.
        for offset, topic, content in messages:
            if (
                type(offset) is not int
                or type(topic) is not str
                or type(content) is not str
                or not (topic.isascii() and content.isascii())
                and (_unpairedSurrogate("Topic", topic) or _unpairedSurrogate("Content", content))
            ):
                return False
    except (TypeError, ValueError):
        return False
    return True


_BAD_OFFSET_ACK = WireError('expected {"Ack": offset}')


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """
    A subscriber's request on C{/popmsg} for what msgqueue still holds of a topic
    (or pattern) above an offset: C{{"History": id, "Topic": t, "After": n}}.
    """

    id: int
    topic: str
    after: int


def historyRequest(requestId: int, topic: str, after: int) -> bytes:
    """
    The frame of a L{HistoryRequest}.
    """
    return encode({"History": requestId, "Topic": topic, "After": after})


_BAD_CONSUMER_FRAME = WireError(
    'expected {"Ack": offset} or {"History": id, "Topic": t, "After": offset} (integers; t a topic or pattern)'
)


def parseConsumerFrame(payload: bytes, isBinary: bool = False) -> int | HistoryRequest | WireError:
    """
    Parse what a consumer sends on C{/popmsg}: an offset acknowledgement (see
    L{parseOffsetAck}), or a L{HistoryRequest}.
    """
    obj = _decodeText(payload, isBinary)
    if not isinstance(obj, dict):
        return _BAD_OFFSET_ACK
    if "History" not in obj:
        upTo = obj.get("Ack")
        return upTo if type(upTo) is int else _BAD_OFFSET_ACK
    requestId, topic, after = obj.get("History"), obj.get("Topic"), obj.get("After")
    if type(requestId) is not int or type(after) is not int or checkPattern(topic) is not None:
        return _BAD_CONSUMER_FRAME
    return HistoryRequest(requestId, topic, after)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class HistoryReply:
    """
    msgqueue's answer to a L{HistoryRequest}: the matching messages above the offset
    (C{[offset, topic, content]} lists, in order), the store's epoch and latest
    offset, and whether that is all of them; or the C{error} that kept it from
    reading them.
    """

    id: int
    epoch: str = ""
    latest: int = 0
    complete: bool = False
    messages: list[list[Any]] | None = None
    error: str | None = None


def historyReply(requestId: int, epoch: str, latest: int, complete: bool, messages: list) -> bytes:
    """
    C{{"History": id, "Epoch": e, "Latest": n, "Complete": b, "Messages": [[Offset, Topic, Content], ...]}}.
    """
    return encode({"History": requestId, "Epoch": epoch, "Latest": latest, "Complete": complete, "Messages": messages})


def historyFailed(requestId: int, reason: str) -> bytes:
    """
    C{{"History": id, "Error": reason}}: msgqueue could not read the history.
    """
    return encode({"History": requestId, "Error": reason})


HISTORY_PREFIX = b'{"History":'
"""How every history reply starts (L{encode} writes no spaces): the subscriber tells
them from deliveries by it."""


def parseHistoryReply(payload: bytes) -> HistoryReply | WireError:
    """
    Parse a L{historyReply} or L{historyFailed} frame.
    """
    obj = _decodeText(payload, False)
    bad = WireError("expected a history reply")
    if not isinstance(obj, dict) or type(obj.get("History")) is not int:
        return bad
    requestId = obj["History"]
    if "Error" in obj:
        return HistoryReply(requestId, error=str(obj["Error"]))
    epoch, latest, complete, messages = obj.get("Epoch"), obj.get("Latest"), obj.get("Complete"), obj.get("Messages")
    if type(epoch) is not str or type(latest) is not int or type(complete) is not bool or type(messages) is not list:
        return bad
    if _unpairedSurrogate("Epoch", epoch) is not None or not _validMessages(messages):
        return bad
    return HistoryReply(requestId, epoch, latest, complete, messages)


def parseOffsetAck(payload: bytes, isBinary: bool = False) -> int | WireError:
    """
    Parse a consumer's C{{"Ack": offset}} on C{/popmsg} (encoded by L{ack}): it
    acknowledges that offset and everything delivered to the consumer before it.
    The offset must be an integer; anything else is the same L{WireError}, which
    msgqueue sends back.
    """
    obj = _decodeText(payload, isBinary)
    upTo = obj.get("Ack") if isinstance(obj, dict) else None
    if type(upTo) is not int:
        return _BAD_OFFSET_ACK
    return upTo
