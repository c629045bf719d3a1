# -*- test-case-name: tests.test_signin -*-
"""
Browser sign-in: single-use tickets and signed session cookies.

A browser cannot send an C{Authorization} header on a WebSocket, so Basic auth alone
locks browsers out.  The public daemons (publisher, subscriber) therefore issue two
kinds of token after a password check: short-lived single-use I{tickets}
(C{POST /ticket}, then C{?ticket=} on the WebSocket URL) and signed I{session
cookies} (C{POST /login}).  Both are HMAC-SHA256 signed with a secret the public
daemons share (C{--ticket-secret-file}), so a token issued by one daemon is accepted
by the other and no shared state is needed, beyond each daemon remembering the
tickets it has seen used until they expire.

A token is C{base64url(payload) + "." + base64url(signature)}, unpadded: plain ASCII
that needs no quoting in a URL query or a cookie value.  Each kind signs with its own
key derived from the secret, so a cookie can never pass as a ticket or the reverse.
"""

from __future__ import annotations

import base64
import heapq
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

MIN_SECRET_BYTES = 32

MALFORMED = "malformed"
BAD_SIGNATURE = "bad signature"
EXPIRED = "expired"
USED = "already used"
REVOKED = "revoked"

_MAX_TOKEN_LENGTH = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class SecretError(Exception):
    """
    The secret file cannot be used; the message is one line naming the file and what
    is wrong, fit to print as the daemon's reason for not starting.
    """


class InvalidToken(Exception):
    """
    A ticket or session that is not accepted.

    @ivar reason: one of L{MALFORMED}, L{BAD_SIGNATURE}, L{EXPIRED}, L{USED},
        L{REVOKED}, so callers can log why without parsing a message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def loadSecret(path: str | None) -> bytes:
    """
    Read the signing secret shared by the public daemons.

    With no file, a random per-process secret is made: sign-in still works, but a
    token is then only accepted by the daemon that issued it.  Surrounding whitespace
    is stripped so a secret written by C{base64 > file} (trailing newline) or edited
    by hand reads the same everywhere.
    """
    if path is None:
        return secrets.token_bytes(MIN_SECRET_BYTES)
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise SecretError(f"cannot read {path}: {e.strerror or e}") from e
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"{path}: a secret needs at least {MIN_SECRET_BYTES} characters;"
            f" make one with: head -c 32 /dev/urandom | base64 > {path}"
        )
    return secret


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    """
    Decode unpadded base64url, refusing anything but its one canonical spelling
    (so a signature cannot be re-spelled into a different token that still passes).
    """
    if not _BASE64URL.fullmatch(text):
        raise InvalidToken(MALFORMED)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:  # binascii.Error: a length that no bytes encode to
        raise InvalidToken(MALFORMED) from None
    if _encode(data) != text:
        raise InvalidToken(MALFORMED)
    return data


def _sign(key: bytes, payload: dict[str, Any]) -> str:
    body = _encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return body + "." + _encode(hmac.digest(key, body.encode("ascii"), "sha256"))


def _open(key: bytes, token: str, fields: dict[str, type]) -> dict[str, Any]:
    """
    Check a token's signature and return its payload, whose keys must be exactly
    C{fields}, each of the given type.  The signature is checked before the JSON is
    parsed, so only payloads we signed ever reach the parser.
    """
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidToken(MALFORMED)
    body, signature = token.split(".")
    payloadBytes, signatureBytes = _decode(body), _decode(signature)
    if not hmac.compare_digest(signatureBytes, hmac.digest(key, body.encode("ascii"), "sha256")):
        raise InvalidToken(BAD_SIGNATURE)
    try:
        payload = json.loads(payloadBytes)
    except (ValueError, RecursionError):
        raise InvalidToken(MALFORMED) from None
    if not isinstance(payload, dict) or payload.keys() != fields.keys():
        raise InvalidToken(MALFORMED)
    for name, kind in fields.items():
        # bool is an int to isinstance; an expiry of true is not a time.
        if not isinstance(payload[name], kind) or isinstance(payload[name], bool):
            raise InvalidToken(MALFORMED)
    return payload


class Tickets:
    """
    Issues and redeems single-use tickets that let a browser open one WebSocket.

    A ticket is accepted once: its nonce is remembered as used until the ticket
    expires, after which its expiry alone refuses it, so the memory only holds the
    tickets redeemed within one C{ttl}.

    @ivar ttl: how long, in seconds, a new ticket stays valid.
    """

    def __init__(self, secret: bytes, clock: IReactorTime, ttl: float = 60.0) -> None:
        self._key = hmac.digest(secret, b"wsqueue ticket v1", "sha256")
        self._clock = clock
        self.ttl = ttl
        self._used: dict[str, int] = {}
        self._expiries: list[tuple[int, str]] = []

    @property
    def remembered(self) -> int:
        """
        How many used tickets are remembered now.
        """
        return len(self._used)

    def issue(self, user: str) -> tuple[str, int]:
        """
        Make a ticket for C{user}; return it and its expiry (unix time, whole seconds).
        """
        expires = math.ceil(self._clock.seconds() + self.ttl)
        return _sign(self._key, {"u": user, "e": expires, "n": secrets.token_urlsafe(16)}), expires

    def redeem(self, ticket: str) -> str:
        """
        Accept C{ticket} for the first and only time and return its user.

        @raise InvalidToken: malformed, bad signature, expired or already used.
        """
        now = self._clock.seconds()
        while self._expiries and self._expiries[0][0] <= now:
            _, nonce = heapq.heappop(self._expiries)
            del self._used[nonce]
        payload = _open(self._key, ticket, {"u": str, "e": int, "n": str})
        expires, nonce = payload["e"], payload["n"]
        if now >= expires:
            raise InvalidToken(EXPIRED)
        if nonce in self._used:
            raise InvalidToken(USED)
        self._used[nonce] = expires
        heapq.heappush(self._expiries, (expires, nonce))
        return str(payload["u"])


class Sessions:
    """
    Issues and verifies signed session cookies.

    A cookie carries a digest of the user's password stamp (their stored password
    hash), never the stamp itself: changing the password or removing the user
    revokes every cookie issued before, with no list of sessions to keep.

    @ivar ttl: how long, in seconds, a new session stays valid.
    """

    def __init__(self, secret: bytes, clock: IReactorTime, ttl: float, stampOf: Callable[[str], str | None]) -> None:
        self._key = hmac.digest(secret, b"wsqueue session v1", "sha256")
        self._clock = clock
        self.ttl = ttl
        self._stampOf = stampOf

    def _stampDigest(self, user: str, stamp: str) -> str:
        message = b"stamp\0" + user.encode("utf-8", "surrogatepass") + b"\0" + stamp.encode("utf-8", "surrogatepass")
        return _encode(hmac.digest(self._key, message, "sha256")[:16])

    def issue(self, user: str) -> tuple[str, int]:
        """
        Make a session cookie value for C{user}; return it and its expiry (unix time).

        @raise InvalidToken: with L{REVOKED} if the user does not exist.
        """
        stamp = self._stampOf(user)
        if stamp is None:
            raise InvalidToken(REVOKED)
        expires = math.ceil(self._clock.seconds() + self.ttl)
        return _sign(self._key, {"u": user, "e": expires, "s": self._stampDigest(user, stamp)}), expires

    def verify(self, value: str) -> str:
        """
        Return the user a session cookie value belongs to.

        @raise InvalidToken: malformed, bad signature, expired, or revoked (the
            password changed or the user is gone).
        """
        payload = _open(self._key, value, {"u": str, "e": int, "s": str})
        user = str(payload["u"])
        if self._clock.seconds() >= payload["e"]:
            raise InvalidToken(EXPIRED)
        stamp = self._stampOf(user)
        # compare_digest takes only ASCII str; the signed field could hold anything.
        presented = payload["s"].encode("utf-8", "surrogatepass")
        if stamp is None or not hmac.compare_digest(self._stampDigest(user, stamp).encode("ascii"), presented):
            raise InvalidToken(REVOKED)
        return user
