"""
Tests for L{wsqueue.acl}: the ACL file's format and its errors, the decisions
(L{ACL.mayPublish} also against a naive reference with hypothesis), and
L{ACLFile} re-reading a changed file on a L{Clock}.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wsqueue import acl as aclModule
from wsqueue.acl import (
    ACL,
    EVERYONE,
    PUBLISH,
    SUBSCRIBE,
    ACLError,
    ACLFile,
    Rule,
    parseACL,
    readACL,
)
from wsqueue.topics import matches


def publish(user: str, pattern: str) -> Rule:
    return Rule(user, PUBLISH, pattern)


def subscribe(user: str, pattern: str) -> Rule:
    return Rule(user, SUBSCRIBE, pattern)


class ParseTests(SynchronousTestCase):
    """
    Tests for L{parseACL} and L{readACL}.
    """

    def test_rules(self) -> None:
        """
        Each rule line gives a L{Rule}, in file order; blank lines, comment lines and
        comments after a rule are left out.
        """
        text = (
            "# the news desk\n"
            "\n"
            "alice publish news.> # desk\n"
            "   \t \n"
            "  # indented comment\n"
            "* subscribe news.*\n"
            "bob subscribe a.b\n"
            "# alice publish secret\n"
        )
        self.assertEqual(
            parseACL(text),
            [publish("alice", "news.>"), subscribe(EVERYONE, "news.*"), subscribe("bob", "a.b")],
        )

    def test_whitespace(self) -> None:
        """
        Fields are separated by any run of spaces and tabs; leading and trailing
        whitespace and Windows line ends do not matter.
        """
        text = "\talice \t publish\t\tnews.eu   \r\n  bob   subscribe  >\t\r\n"
        self.assertEqual(parseACL(text), [publish("alice", "news.eu"), subscribe("bob", ">")])

    def test_trailingCommentWithoutSpace(self) -> None:
        """
        A comment may follow the pattern after any whitespace, and may be empty.
        """
        self.assertEqual(parseACL("alice publish a\t#\n"), [publish("alice", "a")])
        self.assertEqual(parseACL("alice publish a #x y z\n"), [publish("alice", "a")])

    def test_hashInsideTopic(self) -> None:
        """
        A C{#} inside a field is part of it (topics may hold C{#}): only a field
        that starts with C{#} starts a comment.
        """
        self.assertEqual(parseACL("alice publish issue#42\n"), [publish("alice", "issue#42")])

    def test_empty(self) -> None:
        """
        A file of nothing but comments has no rules (and so allows nothing).
        """
        self.assertEqual(parseACL(""), [])
        self.assertEqual(parseACL("# nobody\n\n"), [])

    def assertBadLine(self, text: str, lineNumber: int, *fragments: str) -> str:
        with self.assertRaises(ACLError) as caught:
            parseACL(text, "perms.acl")
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"perms.acl:{lineNumber}: "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)
        return message

    def test_fieldCount(self) -> None:
        """
        A line of other than three fields is an error naming the line and saying
        what is expected.
        """
        for line in ["alice", "alice publish", "alice publish a b", "alice publish a b c d"]:
            self.assertBadLine(f"# header\n\n{line}\n", 3, "USER publish|subscribe PATTERN")

    def test_topicWithSpace(self) -> None:
        """
        A topic with a space in it is just too many fields.
        """
        self.assertBadLine("alice publish news eu\n", 1, "USER publish|subscribe PATTERN", "4 field(s)")

    def test_unknownAction(self) -> None:
        """
        An action other than C{publish} or C{subscribe} (case counts) is an error
        naming it and the line.
        """
        for action in ["read", "Publish", "pub", "*"]:
            self.assertBadLine(
                f"alice publish a\nalice {action} a\n", 2, repr(action), "USER publish|subscribe PATTERN"
            )

    def test_badPattern(self) -> None:
        """
        A pattern that L{wsqueue.wire.checkPattern} refuses is an error naming the
        pattern, the line and the problem.
        """
        self.assertBadLine("a publish x\n\nalice subscribe news.*x\n", 3, "'news.*x'", "whole tokens")
        self.assertBadLine("alice publish a.>.b\n", 1, "'a.>.b'", "last token")
        self.assertBadLine("alice publish news.>#desk\n", 1, "'news.>#desk'")
        self.assertBadLine(f"alice publish {'x' * 300}\n", 1, "longer than")

    def test_firstBadLineReported(self) -> None:
        """
        The first bad line is the one reported.
        """
        self.assertBadLine("alice publish a\nbob\ncarol read a\n", 2)

    def test_defaultPath(self) -> None:
        """
        Without a path, errors name C{<acl>}.
        """
        with self.assertRaises(ACLError) as caught:
            parseACL("alice\n")
        self.assertTrue(str(caught.exception).startswith("<acl>:1: "))

    def test_readFile(self) -> None:
        """
        L{readACL} parses the file (a UTF-8 byte order mark is no part of the first
        user name), and names the file in a bad line's error.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write("\ufeffalice publish a\nbob\n".encode())
        with self.assertRaises(ACLError) as caught:
            readACL(path)
        self.assertTrue(str(caught.exception).startswith(f"{path}:2: "))
        with open(path, "wb") as f:
            f.write("\ufeffalice publish a\nzoë subscribe b\n".encode())
        self.assertEqual(readACL(path), [publish("alice", "a"), subscribe("zoë", "b")])

    def test_readMissingFile(self) -> None:
        """
        A file that cannot be read is an L{ACLError} naming it and why.
        """
        path = self.mktemp()
        with self.assertRaises(ACLError) as caught:
            readACL(path)
        self.assertEqual(str(caught.exception), f"cannot read ACL file {path}: No such file or directory")

    def test_readNotUTF8(self) -> None:
        """
        A file that is not UTF-8 is an L{ACLError}, not a L{UnicodeDecodeError}.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice publish caf\xe9\n")
        with self.assertRaises(ACLError) as caught:
            readACL(path)
        self.assertIn(f"cannot read ACL file {path}: not UTF-8", str(caught.exception))


class PublishTests(SynchronousTestCase):
    """
    Tests for L{ACL.mayPublish}.
    """

    def test_exactTopic(self) -> None:
        """
        A rule without wildcards allows that topic only.
        """
        acl = ACL([publish("alice", "news.eu")])
        self.assertTrue(acl.mayPublish("alice", "news.eu"))
        for topic in ["news", "news.eu.fr", "news.us", "news.e", "news.eu2"]:
            self.assertFalse(acl.mayPublish("alice", topic), topic)

    def test_oneToken(self) -> None:
        """
        C{*} allows exactly one token in its place: C{news.*} does not allow
        C{news.eu.fr}.
        """
        acl = ACL([publish("alice", "news.*")])
        self.assertTrue(acl.mayPublish("alice", "news.eu"))
        self.assertTrue(acl.mayPublish("alice", "news.us"))
        self.assertFalse(acl.mayPublish("alice", "news.eu.fr"))
        self.assertFalse(acl.mayPublish("alice", "news"))
        self.assertFalse(acl.mayPublish("alice", "sport.eu"))

    def test_rest(self) -> None:
        """
        A trailing C{>} allows one or more tokens; C{>} alone allows every topic.
        """
        acl = ACL([publish("alice", "news.>"), publish("bob", ">")])
        self.assertTrue(acl.mayPublish("alice", "news.eu"))
        self.assertTrue(acl.mayPublish("alice", "news.eu.fr"))
        self.assertFalse(acl.mayPublish("alice", "news"))
        self.assertFalse(acl.mayPublish("alice", "sport.eu"))
        for topic in ["a", "news", "x.y.z"]:
            self.assertTrue(acl.mayPublish("bob", topic), topic)

    def test_everyone(self) -> None:
        """
        A rule for C{*} allows every user, named in the file or not.
        """
        acl = ACL([publish(EVERYONE, "chat.*"), publish("alice", "news.eu")])
        for user in ["alice", "bob", "nobody"]:
            self.assertTrue(acl.mayPublish(user, "chat.lobby"), user)
        self.assertFalse(acl.mayPublish("bob", "news.eu"))

    def test_noRule(self) -> None:
        """
        Without a rule nothing may be published: an empty ACL refuses everything,
        and subscribe rules do not allow publishing.
        """
        self.assertFalse(ACL([]).mayPublish("alice", "news.eu"))
        acl = ACL([subscribe("alice", ">"), subscribe(EVERYONE, ">")])
        self.assertFalse(acl.mayPublish("alice", "news.eu"))

    def test_perUser(self) -> None:
        """
        Alice's rule does not let Bob publish.
        """
        acl = ACL([publish("alice", "news.>"), publish("bob", "sport.>")])
        self.assertTrue(acl.mayPublish("alice", "news.eu"))
        self.assertFalse(acl.mayPublish("bob", "news.eu"))
        self.assertTrue(acl.mayPublish("bob", "sport.eu"))
        self.assertFalse(acl.mayPublish("alice", "sport.eu"))
        self.assertFalse(acl.mayPublish("alicebob", "news.eu"))

    def test_cachedAnswersStayRight(self) -> None:
        """
        Asking again gives the same answers, also for another user on the same
        topic (the cache is keyed by both).
        """
        acl = ACL([publish("alice", "news.*")])
        for _ in range(3):
            self.assertTrue(acl.mayPublish("alice", "news.eu"))
            self.assertFalse(acl.mayPublish("bob", "news.eu"))

    def test_cacheBounded(self) -> None:
        """
        The cache of answers never holds more than its limit, and the answers stay
        right after it is emptied.
        """
        self.patch(aclModule, "_PUBLISH_CACHE_SIZE", 10)
        acl = ACL([publish("alice", "t.*")])
        for i in range(35):
            self.assertTrue(acl.mayPublish("alice", f"t.{i}"))
            self.assertFalse(acl.mayPublish("alice", f"u.{i}"))
            self.assertLessEqual(len(acl._published), 10)
        self.assertTrue(acl.mayPublish("alice", "t.0"))

    def test_rules(self) -> None:
        """
        L{ACL.rules} holds the rules given, in order.
        """
        rules = [publish("alice", "a"), subscribe("bob", "b.>")]
        self.assertEqual(ACL(iter(rules)).rules, tuple(rules))

    def test_unknownAction(self) -> None:
        """
        A rule built by hand with an unknown action is refused rather than ignored.
        """
        self.assertRaises(ValueError, ACL, [Rule("alice", "read", "a")])


class SubscribeTests(SynchronousTestCase):
    """
    Tests for L{ACL.maySubscribe}.
    """

    def assertDecisions(self, rule: str, allowed: list[str], refused: list[str]) -> None:
        acl = ACL([subscribe("alice", rule)])
        for pattern in allowed:
            self.assertTrue(acl.maySubscribe("alice", pattern), (rule, pattern))
        for pattern in refused:
            self.assertFalse(acl.maySubscribe("alice", pattern), (rule, pattern))

    def test_rest(self) -> None:
        """
        Rule C{news.>} allows C{news.eu}, C{news.*}, C{news.>} and deeper, not
        C{news} itself nor other topics.
        """
        self.assertDecisions(
            "news.>",
            ["news.eu", "news.*", "news.>", "news.eu.fr", "news.*.fr", "news.eu.>"],
            ["news", "sport.eu", ">", "*.eu", "*"],
        )

    def test_oneToken(self) -> None:
        """
        Rule C{news.*} allows C{news.eu} and C{news.*}, not C{news.>} (it would
        receive C{news.eu.fr}).
        """
        self.assertDecisions("news.*", ["news.eu", "news.*"], ["news.>", "news.eu.fr", "news", "*.eu"])

    def test_exact(self) -> None:
        """
        Rule C{news.eu} allows that topic only, not C{news.*}.
        """
        self.assertDecisions("news.eu", ["news.eu"], ["news.*", "news.>", "news.us", "*.eu", ">"])

    def test_middleWildcard(self) -> None:
        """
        Rule C{a.*.c} allows C{a.b.c} and C{a.*.c}, nothing longer, shorter or wider.
        """
        self.assertDecisions("a.*.c", ["a.b.c", "a.*.c"], ["a.>", "a.b.>", "a.*", "a.*.*", "*.b.c", "a.b.c.d"])

    def test_everything(self) -> None:
        """
        Rule C{>} allows every pattern, C{>} included; rule C{*} only one-token ones.
        """
        self.assertDecisions(">", ["a", "a.*.c", "*", ">", "a.>"], [])
        self.assertDecisions("*", ["a", "*"], [">", "a.b", "a.*"])

    def test_everyone(self) -> None:
        """
        A C{subscribe} rule for C{*} allows every user, alongside their own rules.
        """
        acl = ACL([subscribe(EVERYONE, "public.>"), subscribe("alice", "private.alice")])
        for user in ["alice", "bob"]:
            self.assertTrue(acl.maySubscribe(user, "public.*"), user)
        self.assertTrue(acl.maySubscribe("alice", "private.alice"))
        self.assertFalse(acl.maySubscribe("bob", "private.alice"))

    def test_noRule(self) -> None:
        """
        Without a subscribe rule nothing may be subscribed to: publish rules do not
        allow subscribing.
        """
        self.assertFalse(ACL([]).maySubscribe("alice", "a"))
        acl = ACL([publish("alice", ">"), publish(EVERYONE, ">")])
        self.assertFalse(acl.maySubscribe("alice", "a"))

    def test_perUser(self) -> None:
        """
        Alice's rule does not let Bob subscribe.
        """
        acl = ACL([subscribe("alice", "news.>"), subscribe("bob", "sport.*")])
        self.assertTrue(acl.maySubscribe("alice", "news.*"))
        self.assertFalse(acl.maySubscribe("bob", "news.*"))
        self.assertTrue(acl.maySubscribe("bob", "sport.eu"))
        self.assertFalse(acl.maySubscribe("alice", "sport.eu"))

    def test_anyRule(self) -> None:
        """
        One covering rule among several is enough.
        """
        acl = ACL([subscribe("alice", "a"), subscribe("alice", "b.*"), subscribe("alice", "c.>")])
        self.assertTrue(acl.maySubscribe("alice", "b.x"))
        self.assertTrue(acl.maySubscribe("alice", "c.x.y"))
        self.assertFalse(acl.maySubscribe("alice", "b.>"))


TOKENS = ["a", "b", "c"]
USERS = ["alice", "bob", EVERYONE]
topicsStrategy = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map(".".join)


@st.composite
def patterns(draw) -> str:
    tokens = draw(st.lists(st.sampled_from([*TOKENS, "*"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        tokens[-1] = ">"
    return ".".join(tokens)


rulesStrategy = st.lists(
    st.builds(Rule, st.sampled_from(USERS), st.sampled_from([PUBLISH, SUBSCRIBE]), patterns()),
    max_size=8,
)


def naiveMayPublish(rules: list[Rule], user: str, topic: str) -> bool:
    """
    The reference: any publish rule of the user's or everyone's matches the topic.
    """
    return any(
        rule.action == PUBLISH and rule.user in (user, EVERYONE) and matches(rule.pattern, topic) for rule in rules
    )


class PublishPropertyTests(SynchronousTestCase):
    """
    L{ACL.mayPublish} (a trie and a cache) against L{naiveMayPublish}.
    """

    @settings(derandomize=True, max_examples=300)
    @given(
        rulesStrategy,
        st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol"]), topicsStrategy), min_size=1, max_size=10),
    )
    def test_againstReference(self, rules: list[Rule], questions: list[tuple[str, str]]) -> None:
        acl = ACL(rules)
        # Each question twice: the second answer comes from the cache.
        for user, topic in questions + questions:
            self.assertEqual(acl.mayPublish(user, topic), naiveMayPublish(rules, user, topic), (rules, user, topic))


class ACLFileTests(SynchronousTestCase):
    """
    Tests for L{ACLFile}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.path = self.mktemp()
        self.writeFile("alice publish news.>\n")
        self.aclFile = ACLFile(self.path, self.clock, interval=2.0)
        self.addCleanup(self.aclFile.stop)
        self.heard: list[ACL] = []
        self.aclFile.addListener(self.heard.append)
        self.aclFile.start()

    def writeFile(self, text: str) -> None:
        """
        Replace the file atomically, as an editor or a deployment does; a new inode
        tells the change even when the clock's tick is too coarse for the time.
        """
        temporary = self.path + ".new"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, self.path)

    def test_firstRead(self) -> None:
        """
        The file is read at once, before any check.
        """
        self.assertEqual(self.aclFile.acl.rules, (publish("alice", "news.>"),))
        self.assertTrue(self.aclFile.acl.mayPublish("alice", "news.eu"))

    def test_firstReadFails(self) -> None:
        """
        A file that cannot be read or has a bad line at first raises L{ACLError}.
        """
        missing = self.mktemp()
        with self.assertRaises(ACLError) as caught:
            ACLFile(missing, Clock())
        self.assertEqual(str(caught.exception), f"cannot read ACL file {missing}: No such file or directory")
        self.writeFile("alice publish\n")
        self.assertRaises(ACLError, ACLFile, self.path, Clock())

    def test_reload(self) -> None:
        """
        A rewritten file is in force one interval later, and listeners hear the new
        ACL once; the reload is logged with the path and the rule count.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.writeFile("bob publish news.>\n* subscribe news.*\n")
        self.clock.advance(1.9)
        self.assertTrue(self.aclFile.acl.mayPublish("alice", "news.eu"))
        self.assertEqual(self.heard, [])
        self.clock.advance(0.1)
        acl = self.aclFile.acl
        self.assertFalse(acl.mayPublish("alice", "news.eu"))
        self.assertTrue(acl.mayPublish("bob", "news.eu"))
        self.assertEqual(self.heard, [acl])
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(self.heard, [acl])
        reloads = [e for e in events if "reloaded" in e["log_format"]]
        self.assertEqual([(e["path"], e["count"], e["log_level"]) for e in reloads], [(self.path, 2, LogLevel.info)])

    def test_unchanged(self) -> None:
        """
        An unchanged file is not reloaded.
        """
        before = self.aclFile.acl
        self.assertFalse(self.aclFile.check())
        self.clock.advance(10)
        self.assertIs(self.aclFile.acl, before)
        self.assertEqual(self.heard, [])

    def test_checkNow(self) -> None:
        """
        L{ACLFile.check} reloads at once and says so.
        """
        self.writeFile("bob publish a\n")
        self.assertTrue(self.aclFile.check())
        self.assertTrue(self.aclFile.acl.mayPublish("bob", "a"))
        self.assertEqual(self.heard, [self.aclFile.acl])
        self.assertFalse(self.aclFile.check())

    def test_sameInodeRewrite(self) -> None:
        """
        A file rewritten in place (same inode) with a new size is reloaded, even if
        its modification time has not moved.
        """
        stat = os.stat(self.path)
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("bob publish news.>\n\n")
        os.utime(self.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertEqual(os.stat(self.path).st_ino, stat.st_ino)
        self.assertTrue(self.aclFile.check())
        self.assertTrue(self.aclFile.acl.mayPublish("bob", "news.eu"))

    def test_brokenRewrite(self) -> None:
        """
        A rewrite with a bad line keeps the rules loaded before, logs the error once
        however many checks see it, and a fixed file is then loaded.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        before = self.aclFile.acl
        self.writeFile("bob publish news.>\nbob read news\n")
        for _ in range(3):
            self.clock.advance(2)
        self.assertIs(self.aclFile.acl, before)
        self.assertTrue(self.aclFile.acl.mayPublish("alice", "news.eu"))
        self.assertEqual(self.heard, [])
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIsInstance(errors[0]["error"], ACLError)
        self.assertIn(f"{self.path}:2: ", str(errors[0]["error"]))

        self.writeFile("bob publish news.>\n")
        self.clock.advance(2)
        self.assertTrue(self.aclFile.acl.mayPublish("bob", "news.eu"))
        self.assertEqual(self.heard, [self.aclFile.acl])

    def test_distinctErrorsLogged(self) -> None:
        """
        Each new error is logged, and one seen before is logged again after a
        successful load.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.writeFile("bob\n")
        self.clock.advance(2)
        self.writeFile("bob read a\n")
        self.clock.advance(2)
        self.writeFile("bob publish a\n")
        self.clock.advance(2)
        self.writeFile("bob read a\n")
        self.clock.advance(2)
        errors = [str(e["error"]) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 3, errors)
        self.assertIn("field(s)", errors[0])
        self.assertIn("'read'", errors[1])
        self.assertEqual(errors[2], errors[1])

    def test_deleted(self) -> None:
        """
        A deleted file keeps the rules loaded before, logged once; a new file is
        then loaded.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        before = self.aclFile.acl
        os.remove(self.path)
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertIs(self.aclFile.acl, before)
        self.assertFalse(self.aclFile.check())
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("No such file or directory", str(errors[0]["error"]))
        self.writeFile("bob publish a\n")
        self.clock.advance(2)
        self.assertTrue(self.aclFile.acl.mayPublish("bob", "a"))

    def test_listenerFails(self) -> None:
        """
        A listener that raises is logged; the other listeners still hear the new
        ACL and the file is still watched.
        """

        def broken(acl: ACL) -> None:
            raise RuntimeError("listener bug")

        self.aclFile._listeners.insert(0, broken)
        self.writeFile("bob publish a\n")
        self.clock.advance(2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.heard, [self.aclFile.acl])
        self.writeFile("carol publish a\n")
        self.clock.advance(2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(self.aclFile.acl.mayPublish("carol", "a"))
        self.assertEqual(len(self.heard), 2)

    def test_unexpectedErrorKeepsWatching(self) -> None:
        """
        An unexpected exception while checking is logged, and does not stop the
        watching (a L{LoopingCall} would stop for good).
        """
        self.patch(aclModule, "readACL", lambda path: 1 / 0)
        self.writeFile("bob publish a\n")
        self.clock.advance(2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stop(self) -> None:
        """
        After L{ACLFile.stop} the file is no longer checked and nothing is left
        scheduled; stopping twice is harmless; L{ACLFile.start} watches again.
        """
        self.aclFile.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.writeFile("bob publish a\n")
        self.clock.advance(10)
        self.assertFalse(self.aclFile.acl.mayPublish("bob", "a"))
        self.assertEqual(self.heard, [])
        self.aclFile.stop()
        self.aclFile.start()
        self.aclFile.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertTrue(self.aclFile.acl.mayPublish("bob", "a"))

    def test_stopBeforeStart(self) -> None:
        """
        Stopping an L{ACLFile} never started is harmless.
        """
        aclFile = ACLFile(self.path, Clock())
        aclFile.stop()
        aclFile.stop()

    def test_defaultInterval(self) -> None:
        """
        Without an interval the file is checked every second, the first check one
        second after L{ACLFile.start}.
        """
        clock = Clock()
        aclFile = ACLFile(self.path, clock)
        aclFile.start()
        self.addCleanup(aclFile.stop)
        self.writeFile("bob publish a\n")
        clock.advance(0.5)
        self.assertFalse(aclFile.acl.mayPublish("bob", "a"))
        clock.advance(0.5)
        self.assertTrue(aclFile.acl.mayPublish("bob", "a"))
