# -*- test-case-name: tests.test_passwd -*-
"""
C{wsqueue-passwd FILE USER}: add a user to a credentials file, or change a password.

The password is read from a prompt when standard input is a terminal, else from the
first line of standard input (for scripts), so it never appears in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from wsqueue.auth import CredentialsFileError, hashPassword, readCredentialsFile, writeCredentialsFile


def readPassword(stdin: TextIO) -> str:
    """
    Ask twice on a terminal; otherwise read one line.
    """
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the passwords do not match")
        return first
    return stdin.readline().rstrip("\r\n")


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin) -> int:
    parser = argparse.ArgumentParser(
        prog="wsqueue-passwd", description="Add a user to a wsqueue credentials file or change a password."
    )
    parser.add_argument("file", help="the credentials file (created if missing, mode 0600)")
    parser.add_argument("user", help="the user name (no ':')")
    parser.add_argument("--delete", action="store_true", help="remove the user instead")
    args = parser.parse_args(argv)
    if ":" in args.user or not args.user.strip() or args.user != args.user.strip():
        print("wsqueue-passwd: a user name must be non-empty, with no ':' or surrounding spaces", file=sys.stderr)
        return 2
    try:
        users = readCredentialsFile(args.file) if os.path.exists(args.file) else {}
    except CredentialsFileError as e:
        print(f"wsqueue-passwd: {e}", file=sys.stderr)
        return 1
    if args.delete:
        if users.pop(args.user, None) is None:
            print(f"wsqueue-passwd: no user {args.user} in {args.file}", file=sys.stderr)
            return 1
    else:
        try:
            password = readPassword(stdin)
        except (ValueError, EOFError, KeyboardInterrupt) as e:
            print(f"wsqueue-passwd: {str(e) or 'cancelled'}", file=sys.stderr)
            return 1
        if not password:
            print("wsqueue-passwd: the password must not be empty", file=sys.stderr)
            return 1
        users[args.user] = hashPassword(password)
    writeCredentialsFile(args.file, users)
    print(f"{'removed' if args.delete else 'saved'} {args.user} in {args.file}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
