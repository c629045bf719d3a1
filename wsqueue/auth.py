# -*- test-case-name: tests.test_auth -*-
"""
HTTP Basic authentication for every wsqueue endpoint, through L{twisted.cred}.

Passwords are kept in a credentials file as salted scrypt hashes, one C{user:hash}
line per user (see C{wsqueue-passwd}).  Hashing is deliberately slow, so it runs on
the reactor's thread pool, and a successful check is remembered (keyed by an HMAC
under a per-process secret, never the password) so that reconnecting clients cost
one dictionary look-up.  Without a credentials file only the demo account
C{hello}/C{test} is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from wsqueue.throttle import FailureThrottle, HashQueue, Throttled

REALM = "wsqueue"
UNAUTHORIZED_HEADERS = [("WWW-Authenticate", f'Basic realm="{REALM}"')]
DEMO_USER = "hello"
DEMO_PASSWORD = "test"
INTERNAL_USER = "wsqueue-internal"
"""The user name of the all-in-one daemon's own stage links (see L{BasicAuthenticator.allowInternalAccount})."""

_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_CACHE_SIZE = 4096
_RELOAD_CHECK_SECONDS = 1.0

T = TypeVar("T")
ThreadRunner = Callable[[Callable[[], T]], "Deferred[T]"]


class CredentialsFileError(Exception):
    """
    The credentials file cannot be read or has a malformed line.
    """


def hashPassword(password: str, salt: bytes | None = None) -> str:
    """
    Hash C{password} with scrypt and a random salt, as stored in a credentials file.
    """
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P)
    encoded = [base64.b64encode(part).decode("ascii") for part in (salt, digest)]
    return f"{_SCHEME}${_N}${_R}${_P}${encoded[0]}${encoded[1]}"


def verifyPassword(password: str, stored: str) -> bool:
    """
    Check C{password} against a stored hash, in constant time.
    """
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError, binascii.Error):
        # TypeError: hashlib.scrypt's answer to a negative or oversized n, r or p.
        return False
    return hmac.compare_digest(actual, expected)


def readCredentialsFile(path: str) -> dict[str, str]:
    """
    Read C{user:hash} lines (blank lines and C{#} comments allowed).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CredentialsFileError(f"cannot read credentials file {path}: {e.strerror}")
    users = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored.startswith(_SCHEME + "$"):
            raise CredentialsFileError(
                f"{path}:{number}: expected USER:{_SCHEME}$..., as written by wsqueue-passwd"
            )
        users[user] = stored
    return users


def writeCredentialsFile(path: str, users: dict[str, str]) -> None:
    """
    Write the credentials file atomically, readable by its owner only.
    """
    temporary = f"{path}.tmp{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for user, stored in sorted(users.items()):
            f.write(f"{user}:{stored}\n")
    os.replace(temporary, path)


def defaultThreadRunner(reactor) -> ThreadRunner:
    """
    Run a callable on C{reactor}'s thread pool.
    """
    return lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f)


@implementer(ICredentialsChecker)
class DemoChecker:
    """
    Accepts only the demo account C{hello}/C{test}, as the Go system did.
    """

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: UsernamePassword) -> Deferred[bytes | tuple[()]]:
        userOk = hmac.compare_digest(credentials.username, DEMO_USER.encode())
        passwordOk = hmac.compare_digest(credentials.password, DEMO_PASSWORD.encode())
        if userOk and passwordOk:
            return succeed(credentials.username)
        return fail(UnauthorizedLogin())

    def stampOf(self, user: str) -> str | None:
        """
        What a session of C{user} is bound to (see L{CredentialsFileChecker.stampOf}):
        the demo account never changes.
        """
        return "demo" if user == DEMO_USER else None


@implementer(ICredentialsChecker)
class CredentialsFileChecker:
    """
    Checks passwords against a credentials file, re-reading it when it changes.
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(self, path: str, runInThread: ThreadRunner, clock) -> None:
        self.path = path
        self._runInThread = runInThread
        self._clock = clock
        self._users = readCredentialsFile(path)
        self._mtime = os.stat(path).st_mtime_ns
        self._lastCheck = clock.seconds()
        self._secret = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._listeners: list[Callable[[], None]] = []
        # One scrypt check at a time, known users first (wsqueue.throttle).
        self.hashes = HashQueue(runInThread)

    def addReloadListener(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener} after each reload of the file (to end the connections of
        users removed or with a new password).
        """
        self._listeners.append(listener)

    def checkForChanges(self) -> None:
        """
        Re-read the file now if it changed (a daemon calls this every second, so
        that a change takes effect even when nobody signs in).
        """
        self._lastCheck = float("-inf")
        self._reloadIfChanged()

    def _reloadIfChanged(self) -> None:
        now = self._clock.seconds()
        if now - self._lastCheck < _RELOAD_CHECK_SECONDS:
            return
        self._lastCheck = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime:
                return
            self._users = readCredentialsFile(self.path)
        except (OSError, CredentialsFileError) as e:
            self.log.error("keeping the credentials loaded before: {error}", error=e)
            return
        self._mtime = mtime
        self._verified.clear()
        self.log.info("credentials file {path} reloaded", path=self.path)
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 -- one listener failing must not keep the others from hearing
                self.log.failure("acting on the reloaded credentials failed")

    def stampOf(self, user: str) -> str | None:
        """
        The stored hash of C{user}'s password, or L{None} when there is no such
        user (any more): a session cookie is bound to it, so that changing the
        password or removing the user ends their sessions (L{wsqueue.signin.Sessions}).
        """
        self._reloadIfChanged()
        return self._users.get(user)

    def isVerified(self, credentials: UsernamePassword) -> bool:
        """
        Whether these credentials were checked right before (and the file has not
        changed since): they cost no hashing, so throttling need not stop them.
        """
        self._reloadIfChanged()
        key = hmac.digest(self._secret, credentials.username + b"\0" + credentials.password, "sha256")
        return key in self._verified

    def requestAvatarId(self, credentials: UsernamePassword) -> Deferred[bytes | tuple[()]]:
        self._reloadIfChanged()
        username = credentials.username.decode("utf-8", "replace")
        password = credentials.password.decode("utf-8", "replace")
        key = hmac.digest(self._secret, credentials.username + b"\0" + credentials.password, "sha256")
        if key in self._verified:
            self._verified.move_to_end(key)
            return succeed(credentials.username)
        stored = self._users.get(username)
        known = stored is not None
        if stored is None:
            # Hash anyway, so that a missing user takes as long as a wrong password.
            stored = _DUMMY_HASH
        d = self.hashes.run(lambda: verifyPassword(password, stored), priority=known)
        checked: Deferred[bytes | tuple[()]] = d.addCallback(self._checked, key, known, credentials.username)
        return checked

    def _checked(self, ok: bool, key: bytes, known: bool, username: bytes) -> bytes:
        if not (ok and known):
            raise UnauthorizedLogin()
        self._verified[key] = None
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return username


_DUMMY_HASH = hashPassword(secrets.token_hex(8))


class IUser(Interface):
    """
    The avatar of an authenticated connection (room for per-user permissions).
    """


@implementer(IRealm)
class _UserRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        return IUser, avatarId.decode("utf-8", "replace"), lambda: None


class BasicAuthenticator:
    """
    Turns an C{Authorization} header into a user name, or an L{UnauthorizedLogin}.
    """

    def __init__(self, checker: ICredentialsChecker, clock=None) -> None:
        self.checker = checker
        self.portal = Portal(_UserRealm(), [checker])
        self.throttle: FailureThrottle | None = FailureThrottle(clock) if clock is not None else None
        self._internal: tuple[bytes, bytes] | None = None

    def allowInternalAccount(self, user: str, password: str) -> None:
        """
        Also accept C{user}/C{password}, whatever the credentials file says: the
        account the all-in-one daemon's stages use to reach their own msgqueue, with
        a random password that never leaves the process.
        """
        self._internal = (user.encode("utf-8"), password.encode("utf-8"))

    def authenticate(self, header: str | None, address: str = "") -> Deferred[str]:
        """
        Fire with the user name for a valid C{Basic} header, else fail with
        L{UnauthorizedLogin} (or L{Throttled}: see L{login}).
        """
        credentials = parseBasicHeader(header)
        if credentials is None:
            return fail(UnauthorizedLogin("missing or malformed Authorization header"))
        return self.login(credentials, address)

    def login(self, credentials: UsernamePassword, address: str = "") -> Deferred[str]:
        """
        Fire with the user name if C{credentials} are right (from a Basic header,
        or the form of C{POST /login}), else fail with L{UnauthorizedLogin}; or
        with L{Throttled}, without checking the password, when C{address} (the
        client's) or the user name failed too often lately, or too many checks
        wait.  Credentials checked right before pass whatever the throttle says:
        they cost nothing, and a reconnecting client is not an attacker.
        """
        if self._internal is not None:
            user, password = self._internal
            # Both compared, in constant time, whatever the first says.
            userOk = hmac.compare_digest(credentials.username, user)
            if hmac.compare_digest(credentials.password, password) and userOk:
                return succeed(user.decode("utf-8"))
        throttle = self.throttle
        isVerified = getattr(self.checker, "isVerified", None)
        userName = credentials.username.decode("utf-8", "replace")
        if throttle is not None and not (isVerified is not None and isVerified(credentials)):
            try:
                throttle.check(address, userName)
            except Throttled as e:
                return fail(e)
        login = maybeDeferred(self.portal.login, credentials, None, IUser)
        if throttle is not None:
            login.addCallbacks(self._succeeded, self._failed, callbackArgs=(address, userName),
                               errbackArgs=(address, userName))
        return login.addCallback(lambda result: str(result[1]))

    def _succeeded(self, result: T, address: str, userName: str) -> T:
        assert self.throttle is not None
        self.throttle.succeeded(address, userName)
        return result

    def _failed(self, failure: Failure, address: str, userName: str) -> Failure:
        assert self.throttle is not None
        if failure.check(UnauthorizedLogin):
            self.throttle.failed(address, userName)
        return failure

    def stampOf(self, user: str) -> str | None:
        """
        What C{user}'s sessions are bound to (changes with their password), or
        L{None} for an unknown user; the stages' internal account has no sessions.
        """
        stampOf = getattr(self.checker, "stampOf", None)
        return None if stampOf is None else stampOf(user)


def parseBasicHeader(header: str | None) -> UsernamePassword | None:
    """
    Parse C{Basic base64(user:password)}, or return L{None} if it is not one.
    """
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return UsernamePassword(user, password)


def basicHeader(user: str, password: str) -> str:
    """
    The C{Authorization} header value a client sends.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def makeAuthenticator(credentialsPath: str | None, reactor) -> BasicAuthenticator:
    """
    The authenticator for a daemon: over C{credentialsPath}, or the demo account.
    """
    if credentialsPath is None:
        return BasicAuthenticator(DemoChecker(), reactor)
    return BasicAuthenticator(
        CredentialsFileChecker(credentialsPath, defaultThreadRunner(reactor), reactor), reactor
    )
