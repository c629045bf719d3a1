"""
Tests for L{wsqueue.passwd}, the C{wsqueue-passwd} command that manages
credentials files.

The command is run in-process through C{main(argv, stdin=...)} with its output
captured, so the exit codes and messages that scripts rely on are checked directly.
"""

from __future__ import annotations

import getpass
import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from wsqueue import passwd
from wsqueue.auth import hashPassword, readCredentialsFile, verifyPassword, writeCredentialsFile


class FakeTerminal(io.StringIO):
    """
    A standard input that says it is a terminal.
    """

    def isatty(self) -> bool:
        return True


class PasswdTests(SynchronousTestCase):
    """
    Tests for L{passwd.main}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()

    def runPasswd(self, *argv: str, stdin: str = "", terminal: bool = False) -> tuple[int, str, str]:
        """
        Run wsqueue-passwd; return its exit code, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = passwd.main(list(argv), stdin=(FakeTerminal if terminal else io.StringIO)(stdin))
            except SystemExit as e:
                code = e.code
        return code, out.getvalue(), err.getvalue()

    def test_addUser(self) -> None:
        """
        Adding a user creates the file (mode 0600) with a hash the password verifies against.
        """
        code, out, err = self.runPasswd(self.path, "alice", stdin="wonderland\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"saved alice in {self.path}", out)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        users = readCredentialsFile(self.path)
        self.assertEqual(list(users), ["alice"])
        self.assertTrue(verifyPassword("wonderland", users["alice"]))

    def test_passwordKeepsSpaces(self) -> None:
        """
        Only the line ending is removed from a password read from standard input.
        """
        self.runPasswd(self.path, "alice", stdin=" two words \r\n")
        self.assertTrue(verifyPassword(" two words ", readCredentialsFile(self.path)["alice"]))

    def test_addKeepsOthers(self) -> None:
        """
        Adding a user keeps the users already in the file.
        """
        bob = hashPassword("builder")
        writeCredentialsFile(self.path, {"bob": bob})
        self.assertEqual(self.runPasswd(self.path, "alice", stdin="wonderland\n")[0], 0)
        users = readCredentialsFile(self.path)
        self.assertEqual(users["bob"], bob)
        self.assertTrue(verifyPassword("wonderland", users["alice"]))

    def test_changePassword(self) -> None:
        """
        Running it for an existing user replaces that user's password.
        """
        self.runPasswd(self.path, "alice", stdin="old\n")
        code, _, _ = self.runPasswd(self.path, "alice", stdin="new\n")
        self.assertEqual(code, 0)
        stored = readCredentialsFile(self.path)["alice"]
        self.assertTrue(verifyPassword("new", stored))
        self.assertFalse(verifyPassword("old", stored))

    def test_delete(self) -> None:
        """
        --delete removes the user and keeps the others.
        """
        writeCredentialsFile(self.path, {"alice": hashPassword("a"), "bob": hashPassword("b")})
        code, out, err = self.runPasswd(self.path, "alice", "--delete")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"removed alice in {self.path}", out)
        self.assertEqual(list(readCredentialsFile(self.path)), ["bob"])

    def test_deleteMissingUser(self) -> None:
        """
        Deleting a user that is not there fails with 1 and leaves the file alone.
        """
        writeCredentialsFile(self.path, {"bob": hashPassword("b")})
        before = readCredentialsFile(self.path)
        code, _, err = self.runPasswd(self.path, "alice", "--delete")
        self.assertEqual(code, 1)
        self.assertIn(f"no user alice in {self.path}", err)
        self.assertEqual(readCredentialsFile(self.path), before)

    def test_deleteFromMissingFile(self) -> None:
        """
        Deleting from a file that does not exist fails with 1 and creates nothing.
        """
        code, _, err = self.runPasswd(self.path, "alice", "--delete")
        self.assertEqual(code, 1)
        self.assertIn("no user alice", err)
        self.assertFalse(os.path.exists(self.path))

    def test_emptyPassword(self) -> None:
        """
        An empty password (or no input at all) is refused with 1; no file is written.
        """
        for stdin in ["\n", ""]:
            code, _, err = self.runPasswd(self.path, "alice", stdin=stdin)
            self.assertEqual(code, 1)
            self.assertIn("the password must not be empty", err)
        self.assertFalse(os.path.exists(self.path))

    def test_invalidUserNames(self) -> None:
        """
        User names that are empty, contain ':' or have surrounding spaces fail with 2.
        """
        for user in ["a:b", ":", "", "   ", " alice", "alice ", "\talice"]:
            code, _, err = self.runPasswd(self.path, user, stdin="pw\n")
            self.assertEqual(code, 2, repr(user))
            self.assertIn("user name", err)
        self.assertFalse(os.path.exists(self.path))

    def test_malformedFile(self) -> None:
        """
        A malformed existing file fails with 1, names the line, and is not rewritten.
        """
        with open(self.path, "w") as f:
            f.write("alice\n")
        code, _, err = self.runPasswd(self.path, "bob", stdin="pw\n")
        self.assertEqual(code, 1)
        self.assertIn(f"{self.path}:1:", err)
        with open(self.path) as f:
            self.assertEqual(f.read(), "alice\n")

    def test_missingArguments(self) -> None:
        """
        Missing arguments are a usage error (exit code 2).
        """
        code, _, err = self.runPasswd(self.path)
        self.assertEqual(code, 2)
        self.assertIn("usage: wsqueue-passwd", err)

    def test_terminalAsksTwice(self) -> None:
        """
        On a terminal the password is asked twice without echo and saved when both match.
        """
        prompts = []

        def fakeGetpass(prompt: str) -> str:
            prompts.append(prompt)
            return "secret"

        self.patch(getpass, "getpass", fakeGetpass)
        code, _, _ = self.runPasswd(self.path, "alice", terminal=True)
        self.assertEqual(code, 0)
        self.assertEqual(prompts, ["Password: ", "Again: "])
        self.assertTrue(verifyPassword("secret", readCredentialsFile(self.path)["alice"]))

    def test_terminalMismatch(self) -> None:
        """
        On a terminal, two different answers fail with 1 and write nothing.
        """
        answers = iter(["one", "two"])
        self.patch(getpass, "getpass", lambda prompt: next(answers))
        code, _, err = self.runPasswd(self.path, "alice", terminal=True)
        self.assertEqual(code, 1)
        self.assertIn("the passwords do not match", err)
        self.assertFalse(os.path.exists(self.path))

    def test_terminalCancelled(self) -> None:
        """
        Ctrl-C or Ctrl-D at the prompt fails with 1, says it was cancelled, and writes nothing.
        """
        for exception in [KeyboardInterrupt, EOFError]:

            def interrupted(prompt: str, exception: type[BaseException] = exception) -> str:
                raise exception()

            self.patch(getpass, "getpass", interrupted)
            code, _, err = self.runPasswd(self.path, "alice", terminal=True)
            self.assertEqual(code, 1)
            self.assertEqual(err, "wsqueue-passwd: cancelled\n")
        self.assertFalse(os.path.exists(self.path))
