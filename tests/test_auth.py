"""
Tests for L{wsqueue.auth}: password hashing, the credentials file, the Basic
header, and the checkers every daemon authenticates with.

Password checks run on a thread pool in the daemons; here the thread runner is
synchronous (C{maybeDeferred}) and time is a L{Clock}, so nothing needs a reactor.
"""

from __future__ import annotations

import base64
import os
import stat

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import auth
from wsqueue.auth import (
    BasicAuthenticator,
    CredentialsFileChecker,
    CredentialsFileError,
    DemoChecker,
    basicHeader,
    hashPassword,
    makeAuthenticator,
    parseBasicHeader,
    readCredentialsFile,
    verifyPassword,
    writeCredentialsFile,
)

# Hashing is deliberately slow: hash once for the whole module.
ALICE_HASH = hashPassword("wonderland")
BOB_HASH = hashPassword("builder")


class PasswordHashTests(SynchronousTestCase):
    """
    Tests for L{hashPassword} and L{verifyPassword}.
    """

    def test_rightPassword(self) -> None:
        """
        A password verifies against its own hash.
        """
        self.assertTrue(verifyPassword("wonderland", ALICE_HASH))

    def test_wrongPassword(self) -> None:
        """
        Another password (even a prefix or a different case) does not verify.
        """
        for password in ["wonderlan", "Wonderland", "", "wonderland "]:
            self.assertFalse(verifyPassword(password, ALICE_HASH), password)

    def test_nonASCIIPassword(self) -> None:
        """
        Non-ASCII passwords are hashed as UTF-8 and verify.
        """
        stored = hashPassword("pässwörd☃", salt=b"0" * 16)
        self.assertTrue(verifyPassword("pässwörd☃", stored))
        self.assertFalse(verifyPassword("passwort", stored))

    def test_format(self) -> None:
        """
        A stored hash names its scheme and parameters, so they can change later.
        """
        scheme, n, r, p, salt, _ = ALICE_HASH.split("$")
        self.assertEqual((scheme, n, r, p), ("scrypt", str(2**14), "8", "1"))
        self.assertEqual(len(base64.b64decode(salt)), 16)

    def test_differentSalts(self) -> None:
        """
        Random salts make two hashes of one password differ (both verify); a fixed salt is stable.
        """
        again = hashPassword("wonderland")
        self.assertNotEqual(again, ALICE_HASH)
        self.assertTrue(verifyPassword("wonderland", again))
        self.assertEqual(hashPassword("x", salt=b"s" * 16), hashPassword("x", salt=b"s" * 16))
        self.assertNotEqual(hashPassword("x", salt=b"s" * 16), hashPassword("x", salt=b"t" * 16))

    def test_malformedStored(self) -> None:
        """
        Malformed stored strings never verify and never raise.
        """
        salt, digest = ALICE_HASH.split("$")[4:]
        for stored in [
            "",
            "wonderland",
            "scrypt",
            ALICE_HASH + "$extra",
            ALICE_HASH.replace("scrypt$", "bcrypt$"),
            f"scrypt$x$8$1${salt}${digest}",
            f"scrypt$16384$8$1$!!!${digest}",
            f"scrypt$16384$8$1${salt}$!!!",
            f"scrypt$16384$8$1${salt}$",
            f"scrypt$3$8$1${salt}${digest}",
            f"scrypt$-2$8$1${salt}${digest}",
            f"scrypt$16384$-1$1${salt}${digest}",
            f"scrypt${'9' * 30}$8$1${salt}${digest}",
            f"scrypt$16384$8${'9' * 30}${salt}${digest}",
        ]:
            self.assertFalse(verifyPassword("wonderland", stored), stored)


class CredentialsFileTests(SynchronousTestCase):
    """
    Tests for L{readCredentialsFile} and L{writeCredentialsFile}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()

    def write(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def test_read(self) -> None:
        """
        C{user:hash} lines are read; blank lines and comments are skipped.
        """
        self.write(f"# users\n\nalice:{ALICE_HASH}\n   \n  # indented comment\n  bob:{BOB_HASH}  \n")
        self.assertEqual(readCredentialsFile(self.path), {"alice": ALICE_HASH, "bob": BOB_HASH})

    def test_readEmpty(self) -> None:
        """
        An empty file has no users.
        """
        self.write("")
        self.assertEqual(readCredentialsFile(self.path), {})

    def test_malformedLine(self) -> None:
        """
        A malformed line raises CredentialsFileError naming the file and line number.
        """
        for bad in ["alice", f":{ALICE_HASH}", "alice:", "alice:plaintext"]:
            self.write(f"# comment\nbob:{BOB_HASH}\n{bad}\n")
            e = self.assertRaises(CredentialsFileError, readCredentialsFile, self.path)
            self.assertIn(f"{self.path}:3:", str(e))

    def test_missingFile(self) -> None:
        """
        A missing file raises CredentialsFileError naming it.
        """
        e = self.assertRaises(CredentialsFileError, readCredentialsFile, self.path)
        self.assertIn(self.path, str(e))
        self.assertIn("cannot read credentials file", str(e))

    def test_writeMode(self) -> None:
        """
        The written file is mode 0600, even when it replaces a world-readable one.
        """
        self.write("")
        os.chmod(self.path, 0o644)
        writeCredentialsFile(self.path, {"alice": ALICE_HASH})
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_roundTrip(self) -> None:
        """
        What is written is read back unchanged, with no temporary file left over.
        """
        users = {"bob": BOB_HASH, "alice": ALICE_HASH}
        writeCredentialsFile(self.path, users)
        self.assertEqual(readCredentialsFile(self.path), users)
        self.assertEqual(os.listdir(os.path.dirname(os.path.abspath(self.path))), [os.path.basename(self.path)])

    def test_writeSorted(self) -> None:
        """
        Users are written one per line, sorted, so that the file diffs well.
        """
        writeCredentialsFile(self.path, {"bob": BOB_HASH, "alice": ALICE_HASH})
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(f.read(), f"alice:{ALICE_HASH}\nbob:{BOB_HASH}\n")


class BasicHeaderTests(SynchronousTestCase):
    """
    Tests for L{parseBasicHeader} and L{basicHeader}.
    """

    def test_valid(self) -> None:
        """
        A Basic header gives the user name and password as bytes.
        """
        credentials = parseBasicHeader("Basic " + base64.b64encode(b"alice:wonderland").decode())
        self.assertEqual((credentials.username, credentials.password), (b"alice", b"wonderland"))

    def test_schemeCaseAndSpaces(self) -> None:
        """
        The scheme is case-insensitive and surrounding spaces are ignored.
        """
        token = base64.b64encode(b"alice:pw").decode()
        for header in [f"basic {token}", f"BASIC {token}", f"  Basic   {token}  "]:
            self.assertEqual(parseBasicHeader(header).username, b"alice", header)

    def test_wrongScheme(self) -> None:
        """
        Other schemes (Bearer, Digest) are not Basic credentials.
        """
        token = base64.b64encode(b"alice:pw").decode()
        self.assertIsNone(parseBasicHeader(f"Bearer {token}"))
        self.assertIsNone(parseBasicHeader(f"Digest {token}"))
        self.assertIsNone(parseBasicHeader(token))

    def test_badBase64(self) -> None:
        """
        A token that is not base64 is refused.
        """
        self.assertIsNone(parseBasicHeader("Basic not*base64!"))
        self.assertIsNone(parseBasicHeader("Basic YWxpY2U6cHc"))  # missing padding

    def test_noColon(self) -> None:
        """
        A decoded token without a colon is refused.
        """
        self.assertIsNone(parseBasicHeader("Basic " + base64.b64encode(b"alicepw").decode()))

    def test_missing(self) -> None:
        """
        No header, or an empty one, gives no credentials.
        """
        self.assertIsNone(parseBasicHeader(None))
        self.assertIsNone(parseBasicHeader(""))
        self.assertIsNone(parseBasicHeader("Basic"))
        self.assertIsNone(parseBasicHeader("Basic "))

    def test_passwordWithColon(self) -> None:
        """
        The user name ends at the first colon: the password may contain colons.
        """
        credentials = parseBasicHeader("Basic " + base64.b64encode(b"alice:a:b:c").decode())
        self.assertEqual((credentials.username, credentials.password), (b"alice", b"a:b:c"))

    def test_emptyPassword(self) -> None:
        """
        An empty password is parsed (and left to the checker to refuse).
        """
        credentials = parseBasicHeader("Basic " + base64.b64encode(b"alice:").decode())
        self.assertEqual((credentials.username, credentials.password), (b"alice", b""))

    def test_roundTrip(self) -> None:
        """
        basicHeader makes what parseBasicHeader reads, including non-ASCII as UTF-8.
        """
        for user, password in [("hello", "test"), ("alice", "p:w"), ("jörg", "☃")]:
            credentials = parseBasicHeader(basicHeader(user, password))
            self.assertEqual(
                (credentials.username, credentials.password), (user.encode(), password.encode())
            )
        self.assertEqual(basicHeader("hello", "test"), "Basic aGVsbG86dGVzdA==")


class DemoCheckerTests(SynchronousTestCase):
    """
    Tests for L{DemoChecker}.
    """

    def test_demoAccount(self) -> None:
        """
        hello/test is accepted, and the avatar id is the user name.
        """
        d = DemoChecker().requestAvatarId(UsernamePassword(b"hello", b"test"))
        self.assertEqual(self.successResultOf(d), b"hello")

    def test_anythingElse(self) -> None:
        """
        Any other user name or password fails with UnauthorizedLogin.
        """
        for user, password in [(b"hello", b"wrong"), (b"other", b"test"), (b"", b""), (b"hello", b"test ")]:
            d = DemoChecker().requestAvatarId(UsernamePassword(user, password))
            self.failureResultOf(d, UnauthorizedLogin)


class CredentialsFileCheckerTests(SynchronousTestCase):
    """
    Tests for L{CredentialsFileChecker}, with a synchronous thread runner and a Clock.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        writeCredentialsFile(self.path, {"alice": ALICE_HASH})
        self.clock = Clock()
        self.clock.advance(1000)
        self.runs = 0
        self.checker = CredentialsFileChecker(self.path, self.runner, self.clock)

    def runner(self, f):
        """
        Run C{f} at once, counting the calls.
        """
        self.runs += 1
        return maybeDeferred(f)

    def check(self, user: bytes, password: bytes):
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def replaceFile(self, users: dict[str, str] | None = None, text: str | None = None) -> None:
        """
        Rewrite the credentials file with a modification time surely different from
        the previous one (file systems may have coarse timestamps).
        """
        before = os.stat(self.path).st_mtime_ns
        if text is None:
            writeCredentialsFile(self.path, users)
        else:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(text)
        os.utime(self.path, ns=(before + 5_000_000_000, before + 5_000_000_000))

    def test_rightPassword(self) -> None:
        """
        The right password gives the user name as avatar id.
        """
        self.assertEqual(self.successResultOf(self.check(b"alice", b"wonderland")), b"alice")
        self.assertEqual(self.runs, 1)

    def test_wrongPassword(self) -> None:
        """
        A wrong password fails with UnauthorizedLogin (after hashing, on the runner).
        """
        self.failureResultOf(self.check(b"alice", b"wrong"), UnauthorizedLogin)
        self.assertEqual(self.runs, 1)

    def test_unknownUser(self) -> None:
        """
        An unknown user fails with UnauthorizedLogin after hashing, so timing hides who exists.
        """
        self.failureResultOf(self.check(b"mallory", b"wonderland"), UnauthorizedLogin)
        self.assertEqual(self.runs, 1)

    def test_cacheHit(self) -> None:
        """
        A successful check is remembered: the same credentials again do not hash.
        """
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.assertEqual(self.successResultOf(self.check(b"alice", b"wonderland")), b"alice")
        self.assertEqual(self.runs, 1)

    def test_failuresNotCached(self) -> None:
        """
        Failed checks are not cached, and a cached success does not let another password in.
        """
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.failureResultOf(self.check(b"alice", b"wrong"), UnauthorizedLogin)
        self.failureResultOf(self.check(b"alice", b"wrong"), UnauthorizedLogin)
        self.assertEqual(self.runs, 3)

    def test_cacheBounded(self) -> None:
        """
        The cache keeps at most its size in entries, dropping the oldest.
        """
        self.patch(auth, "_CACHE_SIZE", 1)
        writeCredentialsFile(self.path, {"alice": ALICE_HASH, "bob": BOB_HASH})
        self.checker = CredentialsFileChecker(self.path, self.runner, self.clock)
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.successResultOf(self.check(b"bob", b"builder"))
        self.successResultOf(self.check(b"bob", b"builder"))
        self.assertEqual(self.runs, 2)
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.assertEqual(self.runs, 3)

    def test_changePickedUp(self) -> None:
        """
        A changed file is re-read after one second and the cache cleared, so old passwords stop working.
        """
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.replaceFile({"alice": BOB_HASH})
        self.clock.advance(0.5)
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.assertEqual(self.runs, 1)
        self.clock.advance(0.5)
        self.failureResultOf(self.check(b"alice", b"wonderland"), UnauthorizedLogin)
        self.assertEqual(self.successResultOf(self.check(b"alice", b"builder")), b"alice")

    def test_unchangedFileKeepsCache(self) -> None:
        """
        Checking an unchanged file (same modification time) keeps the cache.
        """
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.clock.advance(5)
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.assertEqual(self.runs, 1)

    def test_newUserPickedUp(self) -> None:
        """
        A user added to the file can log in after the reload.
        """
        self.failureResultOf(self.check(b"bob", b"builder"), UnauthorizedLogin)
        self.replaceFile({"alice": ALICE_HASH, "bob": BOB_HASH})
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.check(b"bob", b"builder")), b"bob")

    def test_reloadLogged(self) -> None:
        """
        A reload is logged with the file's path.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.replaceFile({"alice": ALICE_HASH})
        self.clock.advance(1)
        self.successResultOf(self.check(b"alice", b"wonderland"))
        reloads = [e for e in events if "reloaded" in e["log_format"]]
        self.assertEqual([e["path"] for e in reloads], [self.path])

    def test_unreadableChangeKeepsUsers(self) -> None:
        """
        A changed file that cannot be parsed is logged and the users loaded before stay in force.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.successResultOf(self.check(b"alice", b"wonderland"))
        self.replaceFile(text="alice\n")
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.check(b"alice", b"wonderland")), b"alice")
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIsInstance(errors[0]["error"], CredentialsFileError)
        self.replaceFile({"alice": BOB_HASH})
        self.clock.advance(1)
        self.failureResultOf(self.check(b"alice", b"wonderland"), UnauthorizedLogin)

    def test_deletedFileKeepsUsers(self) -> None:
        """
        A credentials file that disappears leaves the users loaded before in force.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        os.remove(self.path)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.check(b"alice", b"wonderland")), b"alice")
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.error]), 1)

    def test_missingFileAtStart(self) -> None:
        """
        A checker cannot be made over a missing file.
        """
        self.assertRaises(CredentialsFileError, CredentialsFileChecker, self.mktemp(), self.runner, self.clock)


class BasicAuthenticatorTests(SynchronousTestCase):
    """
    Tests for L{BasicAuthenticator} and L{makeAuthenticator}.
    """

    def setUp(self) -> None:
        path = self.mktemp()
        writeCredentialsFile(path, {"alice": ALICE_HASH})
        checker = CredentialsFileChecker(path, maybeDeferred, Clock())
        self.authenticator = BasicAuthenticator(checker)

    def test_authenticated(self) -> None:
        """
        A valid header fires with the user name as a string.
        """
        d = self.authenticator.authenticate(basicHeader("alice", "wonderland"))
        self.assertEqual(self.successResultOf(d), "alice")

    def test_missingHeader(self) -> None:
        """
        No header fails with UnauthorizedLogin.
        """
        self.failureResultOf(self.authenticator.authenticate(None), UnauthorizedLogin)

    def test_malformedHeader(self) -> None:
        """
        A header that is not Basic credentials fails with UnauthorizedLogin.
        """
        for header in ["", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()]:
            self.failureResultOf(self.authenticator.authenticate(header), UnauthorizedLogin)

    def test_badPassword(self) -> None:
        """
        A wrong password or unknown user fails with UnauthorizedLogin.
        """
        self.failureResultOf(self.authenticator.authenticate(basicHeader("alice", "nope")), UnauthorizedLogin)
        self.failureResultOf(self.authenticator.authenticate(basicHeader("bob", "builder")), UnauthorizedLogin)

    def test_malformedStoredHash(self) -> None:
        """
        A stored hash with unusable scrypt parameters refuses the login rather than erroring.
        """
        path = self.mktemp()
        salt, digest = ALICE_HASH.split("$")[4:]
        with open(path, "w") as f:
            f.write(f"alice:scrypt$-2$8$1${salt}${digest}\n")
        authenticator = BasicAuthenticator(CredentialsFileChecker(path, maybeDeferred, Clock()))
        self.failureResultOf(authenticator.authenticate(basicHeader("alice", "wonderland")), UnauthorizedLogin)

    def test_demoWithoutCredentialsFile(self) -> None:
        """
        makeAuthenticator(None, ...) accepts the demo account hello/test only.
        """
        authenticator = makeAuthenticator(None, MemoryReactorClock())
        self.assertEqual(self.successResultOf(authenticator.authenticate(basicHeader("hello", "test"))), "hello")
        self.failureResultOf(authenticator.authenticate(basicHeader("hello", "nope")), UnauthorizedLogin)
        self.failureResultOf(authenticator.authenticate(basicHeader("alice", "wonderland")), UnauthorizedLogin)

    def test_credentialsFileAuthenticator(self) -> None:
        """
        makeAuthenticator(path, reactor) checks the file on the thread pool; the demo account fails.
        """
        path = self.mktemp()
        writeCredentialsFile(path, {"alice": ALICE_HASH})
        reactor = ThreadlessReactor()
        authenticator = makeAuthenticator(path, reactor)
        self.assertEqual(self.successResultOf(authenticator.authenticate(basicHeader("alice", "wonderland"))), "alice")
        self.assertEqual(reactor.pool.calls, 1)
        self.failureResultOf(authenticator.authenticate(basicHeader("hello", "test")), UnauthorizedLogin)

    def test_makeAuthenticatorMissingFile(self) -> None:
        """
        makeAuthenticator over a missing file raises CredentialsFileError.
        """
        self.assertRaises(CredentialsFileError, makeAuthenticator, self.mktemp(), MemoryReactorClock())


class SynchronousThreadPool:
    """
    A thread pool that runs work at once, in the calling thread.
    """

    def __init__(self) -> None:
        self.calls = 0

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs) -> None:
        self.calls += 1
        try:
            result = f(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 -- mirrors ThreadPool
            onResult(False, e)
        else:
            onResult(True, result)


class ThreadlessReactor(MemoryReactorClock):
    """
    A memory reactor whose thread pool runs work synchronously.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = SynchronousThreadPool()

    def getThreadPool(self) -> SynchronousThreadPool:
        return self.pool

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)
