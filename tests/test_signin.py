"""
Tests for L{wsqueue.signin}: single-use tickets, signed session cookies and the
shared secret they are signed with.

Time is a L{Clock} advanced by hand, so expiry is tested to the second.  To reach the
checks that run after the signature (JSON, field types), the tests sign crafted
payloads with the same derived keys the module uses.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import signin
from wsqueue.signin import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    REVOKED,
    USED,
    InvalidToken,
    SecretError,
    Sessions,
    Tickets,
    loadSecret,
)

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
TICKET_KEY = hmac.digest(SECRET, b"wsqueue ticket v1", "sha256")
SESSION_KEY = hmac.digest(SECRET, b"wsqueue session v1", "sha256")
TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signRaw(key: bytes, payload: bytes) -> str:
    """
    A token over arbitrary payload bytes, signed as the module signs.
    """
    body = b64(payload)
    return body + "." + b64(hmac.digest(key, body.encode("ascii"), "sha256"))


def signJson(key: bytes, payload: object) -> str:
    return signRaw(key, json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def payloadOf(token: str) -> dict:
    return json.loads(unb64(token.split(".")[0]))


class TokenAssertions(SynchronousTestCase):
    def assertRefused(self, reason: str, f, *args: object) -> None:
        """
        C{f(*args)} raises L{InvalidToken} with C{reason}.
        """
        e = self.assertRaises(InvalidToken, f, *args)
        self.assertEqual((e.reason, e.args), (reason, (reason,)))


class TicketTests(TokenAssertions):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.25)
        self.tickets = Tickets(SECRET, self.clock, ttl=60)

    def test_redeem(self) -> None:
        """
        A ticket redeems to the user it was issued for, exactly as given.
        """
        for user in ["alice", "Zoë 名前", "a.b=c; d", ""]:
            ticket, _ = self.tickets.issue(user)
            self.assertEqual(self.tickets.redeem(ticket), user)

    def test_format(self) -> None:
        """
        A ticket is two unpadded base64url parts: safe in a URL query unquoted.
        """
        ticket, _ = self.tickets.issue("Zoë")
        self.assertRegex(ticket, TOKEN)
        payload = payloadOf(ticket)
        self.assertEqual((sorted(payload), payload["u"]), (["e", "n", "u"], "Zoë"))

    def test_eachTicketDiffers(self) -> None:
        """
        Two tickets for the same user at the same time differ (a fresh nonce each),
        so redeeming one does not use up the other.
        """
        first, _ = self.tickets.issue("alice")
        second, _ = self.tickets.issue("alice")
        self.assertNotEqual(first, second)
        self.assertEqual((self.tickets.redeem(first), self.tickets.redeem(second)), ("alice", "alice"))

    def test_singleUse(self) -> None:
        """
        A ticket is accepted once.
        """
        ticket, _ = self.tickets.issue("alice")
        self.tickets.redeem(ticket)
        self.assertRefused(USED, self.tickets.redeem, ticket)
        self.clock.advance(30)
        self.assertRefused(USED, self.tickets.redeem, ticket)

    def test_expires(self) -> None:
        """
        C{expires} is C{ceil(now + ttl)}: the ticket works just before it and not
        from then on.
        """
        ticket, expires = self.tickets.issue("alice")
        self.assertEqual(expires, 1061)
        self.assertEqual(payloadOf(ticket)["e"], 1061)
        late, _ = self.tickets.issue("bob")
        self.clock.advance(expires - self.clock.seconds() - 0.001)
        self.assertEqual(self.tickets.redeem(ticket), "alice")
        self.clock.advance(0.001)
        self.assertRefused(EXPIRED, self.tickets.redeem, late)
        self.clock.advance(1000)
        self.assertRefused(EXPIRED, self.tickets.redeem, late)

    def test_expiresWholeSeconds(self) -> None:
        """
        A whole-second time plus a whole ttl is not rounded up.
        """
        clock = Clock()
        clock.advance(500)
        self.assertEqual(Tickets(SECRET, clock, ttl=30).issue("alice")[1], 530)
        self.assertEqual(Tickets(SECRET, clock, ttl=0.5).issue("alice")[1], 501)

    def test_forgetsExpired(self) -> None:
        """
        Used tickets are remembered only until they expire, so memory is bounded by
        the tickets redeemed within one ttl.
        """
        for _ in range(5):
            self.tickets.redeem(self.tickets.issue("alice")[0])
        self.assertEqual(self.tickets.remembered, 5)
        self.clock.advance(30)
        self.tickets.redeem(self.tickets.issue("alice")[0])
        self.assertEqual(self.tickets.remembered, 6)
        self.clock.advance(31)
        # The first five expired; a redeem (even a refused one) forgets them.
        self.assertRefused(MALFORMED, self.tickets.redeem, "")
        self.assertEqual(self.tickets.remembered, 1)
        self.clock.advance(30)
        ticket, _ = self.tickets.issue("alice")
        self.tickets.redeem(ticket)
        self.assertEqual(self.tickets.remembered, 1)
        self.clock.advance(61)
        self.assertRefused(EXPIRED, self.tickets.redeem, ticket)
        self.assertEqual(self.tickets.remembered, 0)

    def test_forgetsAtExpiry(self) -> None:
        """
        A used ticket is forgotten at its expiry second itself: from then on its
        expiry refuses it, so remembering it would only cost memory.
        """
        clock = Clock()
        tickets = Tickets(SECRET, clock, ttl=60)
        ticket, expires = tickets.issue("alice")
        tickets.redeem(ticket)
        clock.advance(expires - 0.5)
        self.assertRefused(USED, tickets.redeem, ticket)
        self.assertEqual(tickets.remembered, 1)
        clock.advance(0.5)
        self.assertRefused(EXPIRED, tickets.redeem, ticket)
        self.assertEqual(tickets.remembered, 0)

    def test_forged(self) -> None:
        """
        Changing the payload (another user) while keeping the signature is refused.
        """
        ticket, _ = self.tickets.issue("alice")
        payload = payloadOf(ticket)
        payload["u"] = "root"
        body = b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        self.assertRefused(BAD_SIGNATURE, self.tickets.redeem, body + "." + ticket.split(".")[1])

    def test_signatureChanged(self) -> None:
        """
        A changed or truncated signature is refused.
        """
        ticket, _ = self.tickets.issue("alice")
        body, signature = ticket.split(".")
        flipped = bytearray(unb64(signature))
        flipped[0] ^= 1
        self.assertRefused(BAD_SIGNATURE, self.tickets.redeem, body + "." + b64(bytes(flipped)))
        self.assertRefused(BAD_SIGNATURE, self.tickets.redeem, body + "." + b64(unb64(signature)[:16]))
        self.assertEqual(self.tickets.redeem(ticket), "alice")

    def test_otherSecret(self) -> None:
        """
        A ticket from a daemon with another secret is refused.
        """
        ticket, _ = Tickets(OTHER_SECRET, self.clock).issue("alice")
        self.assertRefused(BAD_SIGNATURE, self.tickets.redeem, ticket)

    def test_sharedSecret(self) -> None:
        """
        A ticket from another daemon with the same secret is accepted, once per daemon
        (each remembers what it saw used).
        """
        ticket, _ = Tickets(SECRET, self.clock).issue("alice")
        self.assertEqual(self.tickets.redeem(ticket), "alice")
        self.assertRefused(USED, self.tickets.redeem, ticket)

    def test_sessionIsNotTicket(self) -> None:
        """
        A session cookie, even for the same secret, is not accepted as a ticket.
        """
        cookie, _ = Sessions(SECRET, self.clock, 3600, lambda user: "stamp").issue("alice")
        self.assertRefused(BAD_SIGNATURE, self.tickets.redeem, cookie)

    def test_garbage(self) -> None:
        """
        Text that is not two base64url parts is malformed.
        """
        ticket, _ = self.tickets.issue("alice")
        body, signature = ticket.split(".")
        for garbage in [
            "",
            ".",
            "garbage",
            "a.b.c",
            ticket + "." + signature,
            ticket + "=",
            body + "==." + signature,
            body + ".",
            "." + signature,
            "AAAAA." + signature,
            body + " ." + signature,
            body + ".+" + signature[1:],
            "é" + ticket,
            "x" * 4097,
            ticket + "A" * (4097 - len(ticket)),
        ]:
            self.assertRefused(MALFORMED, self.tickets.redeem, garbage)

    def test_nonCanonicalBase64(self) -> None:
        """
        A signature re-spelled with different trailing bits (decoding to the same
        bytes) is refused: each token has one spelling.
        """
        ticket, _ = self.tickets.issue("alice")
        body, signature = ticket.split(".")
        # 32 bytes make 43 characters whose last one carries 2 unused bits.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(signature[-1])
        respelled = signature[:-1] + alphabet[last ^ 1]
        self.assertEqual(unb64(respelled), unb64(signature))
        self.assertRefused(MALFORMED, self.tickets.redeem, body + "." + respelled)
        self.assertEqual(self.tickets.redeem(ticket), "alice")

    def test_malformedPayload(self) -> None:
        """
        A correctly signed payload that is not JSON, or has missing, extra or
        wrongly typed fields, is malformed.
        """
        good = {"u": "alice", "e": 2000, "n": "nonce"}
        self.assertEqual(self.tickets.redeem(signJson(TICKET_KEY, good)), "alice")
        for raw in [b"", b"not json", b"\xff\xfe", b"[" * 1500 + b"]" * 1500, b'{"u":"alice","e":2000,"n":"x"']:
            self.assertRefused(MALFORMED, self.tickets.redeem, signRaw(TICKET_KEY, raw))
        payloads: list[object] = [
            [],
            "alice",
            None,
            {},
            {"u": "alice", "e": 2000},
            {**good, "x": 1},
            {**good, "u": 1},
            {**good, "u": None},
            {**good, "e": "2000"},
            {**good, "e": 2000.5},
            {**good, "e": True},
            {**good, "n": 5},
            {**good, "n": ["nonce"]},
            {**good, "n": {"a": 1}},
        ]
        for payload in payloads:
            self.assertRefused(MALFORMED, self.tickets.redeem, signJson(TICKET_KEY, payload))


class SessionTests(TokenAssertions):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.25)
        self.stamps: dict[str, str] = {"alice": "$scrypt$alice-hash", "Zoë": "$scrypt$zoe-hash"}
        self.sessions = Sessions(SECRET, self.clock, 3600, self.stamps.get)

    def test_verify(self) -> None:
        """
        A session cookie verifies to its user, as often as it is presented.
        """
        for user in ["alice", "Zoë"]:
            cookie, expires = self.sessions.issue(user)
            self.assertEqual(expires, 4601)
            self.assertEqual((self.sessions.verify(cookie), self.sessions.verify(cookie)), (user, user))

    def test_format(self) -> None:
        """
        A cookie value is two unpadded base64url parts: no quoting needed, and the
        stamp (a password hash) is not in it.
        """
        cookie, _ = self.sessions.issue("alice")
        self.assertRegex(cookie, TOKEN)
        payload = payloadOf(cookie)
        self.assertEqual(sorted(payload), ["e", "s", "u"])
        decoded = unb64(cookie.split(".")[0]).decode()
        self.assertNotIn("alice-hash", decoded)
        self.assertNotIn("scrypt", decoded)
        self.assertNotIn(self.stamps["alice"], payload["s"])

    def test_expired(self) -> None:
        """
        A session is refused from its expiry on.
        """
        cookie, expires = self.sessions.issue("alice")
        self.clock.advance(expires - self.clock.seconds() - 0.001)
        self.assertEqual(self.sessions.verify(cookie), "alice")
        self.clock.advance(0.001)
        self.assertRefused(EXPIRED, self.sessions.verify, cookie)

    def test_passwordChanged(self) -> None:
        """
        Changing the user's stamp (their password) revokes their sessions, and only
        theirs; a new session works.
        """
        cookie, _ = self.sessions.issue("alice")
        other, _ = self.sessions.issue("Zoë")
        self.stamps["alice"] = "$scrypt$new-hash"
        self.assertRefused(REVOKED, self.sessions.verify, cookie)
        self.assertEqual(self.sessions.verify(other), "Zoë")
        self.assertEqual(self.sessions.verify(self.sessions.issue("alice")[0]), "alice")

    def test_userGone(self) -> None:
        """
        A removed user's sessions are refused.
        """
        cookie, _ = self.sessions.issue("alice")
        del self.stamps["alice"]
        self.assertRefused(REVOKED, self.sessions.verify, cookie)

    def test_issueUnknownUser(self) -> None:
        """
        No session is issued for a user that does not exist.
        """
        self.assertRefused(REVOKED, self.sessions.issue, "mallory")

    def test_stampDigestBoundToUser(self) -> None:
        """
        The stamp digest is bound to the user: swapping in another user's digest is
        refused even when both have the same stamp.
        """
        self.stamps["bob"] = self.stamps["alice"]
        payload = payloadOf(self.sessions.issue("bob")[0])
        payload["u"] = "alice"
        self.assertRefused(REVOKED, self.sessions.verify, signJson(SESSION_KEY, payload))

    def test_forged(self) -> None:
        """
        Another user in the payload with the signature kept is refused.
        """
        cookie, _ = self.sessions.issue("alice")
        payload = payloadOf(cookie)
        payload["u"] = "Zoë"
        body = b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        self.assertRefused(BAD_SIGNATURE, self.sessions.verify, body + "." + cookie.split(".")[1])

    def test_otherSecret(self) -> None:
        """
        A cookie signed with another secret is refused.
        """
        cookie, _ = Sessions(OTHER_SECRET, self.clock, 3600, self.stamps.get).issue("alice")
        self.assertRefused(BAD_SIGNATURE, self.sessions.verify, cookie)

    def test_ticketIsNotSession(self) -> None:
        """
        A ticket is not accepted as a session cookie.
        """
        ticket, _ = Tickets(SECRET, self.clock).issue("alice")
        self.assertRefused(BAD_SIGNATURE, self.sessions.verify, ticket)

    def test_malformed(self) -> None:
        """
        Garbage and correctly signed but malformed payloads are malformed.
        """
        for garbage in ["", "a.b.c", "x" * 4097, "no-dot"]:
            self.assertRefused(MALFORMED, self.sessions.verify, garbage)
        good = {"u": "alice", "e": 2000, "s": "digest"}
        self.assertRefused(REVOKED, self.sessions.verify, signJson(SESSION_KEY, good))
        self.assertRefused(MALFORMED, self.sessions.verify, signRaw(SESSION_KEY, b"{not json"))
        for payload in [{**good, "s": None}, {**good, "u": ["alice"]}, {**good, "e": None}, {"u": "alice", "e": 2000}]:
            self.assertRefused(MALFORMED, self.sessions.verify, signJson(SESSION_KEY, payload))

    def test_oddDigest(self) -> None:
        """
        A signed digest field with non-ASCII text is refused as revoked, not a crash
        (C{hmac.compare_digest} takes only ASCII strings).
        """
        for digest in ["é", "\ud800"]:
            payload = {"u": "alice", "e": 2000, "s": digest}
            self.assertRefused(REVOKED, self.sessions.verify, signJson(SESSION_KEY, payload))


class LoadSecretTests(SynchronousTestCase):
    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_noFile(self) -> None:
        """
        No file gives 32 random bytes, different each time.
        """
        first, second = loadSecret(None), loadSecret(None)
        self.assertEqual((len(first), len(second)), (32, 32))
        self.assertNotEqual(first, second)

    def test_stripped(self) -> None:
        """
        Surrounding whitespace (the newline C{base64} writes) is not part of the secret.
        """
        secret = b"A" * 20 + b"b c" + b"D" * 17
        self.assertEqual(len(secret), 40)
        self.assertEqual(loadSecret(self.write(secret + b"\n")), secret)
        self.assertEqual(loadSecret(self.write(b" \t\n" + secret + b"\r\n\n")), secret)

    def test_minimum(self) -> None:
        """
        Exactly 32 characters are enough.
        """
        self.assertEqual(signin.MIN_SECRET_BYTES, 32)
        self.assertEqual(loadSecret(self.write(b"x" * 32 + b"\n")), b"x" * 32)

    def test_short(self) -> None:
        """
        A secret under 32 characters (after stripping) is refused with a one-line
        message naming the file and how to make a good one.
        """
        for content in [b"", b"x" * 31, b"  " + b"x" * 31 + b"\n\n"]:
            path = self.write(content)
            e = self.assertRaises(SecretError, loadSecret, path)
            self.assertEqual(
                str(e),
                f"{path}: a secret needs at least 32 characters; make one with:"
                f" head -c 32 /dev/urandom | base64 > {path}",
            )

    def test_missing(self) -> None:
        """
        A missing or unreadable file is refused with the file named and the reason.
        """
        path = self.mktemp()
        e = self.assertRaises(SecretError, loadSecret, path)
        self.assertEqual(str(e), f"cannot read {path}: No such file or directory")
        os.mkdir(path)
        e = self.assertRaises(SecretError, loadSecret, path)
        self.assertEqual(str(e), f"cannot read {path}: Is a directory")

    def test_secretsUsable(self) -> None:
        """
        A loaded secret signs tokens two daemons both accept.
        """
        secret = loadSecret(self.write(b"Y" * 40 + b"\n"))
        clock = Clock()
        ticket, _ = Tickets(secret, clock).issue("alice")
        self.assertEqual(Tickets(loadSecret(self.write(b"Y" * 40)), clock).redeem(ticket), "alice")
