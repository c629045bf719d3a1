"""
L{wsqueue.topics}: wildcard patterns, checked against a naive reference with
hypothesis, and the trie's book-keeping; L{wsqueue.subscriber.TopicRegistry} on top.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.subscriber import TopicRegistry
from wsqueue.topics import TopicTrie, checkWildcards, covers, isPattern, matches
from wsqueue.wire import checkPattern, checkTopic

TOKENS = ["a", "b", "c"]
topicsStrategy = st.lists(st.sampled_from([*TOKENS, "d"]), min_size=1, max_size=5).map(".".join)


@st.composite
def patterns(draw) -> str:
    tokens = draw(st.lists(st.sampled_from([*TOKENS, "*"]), min_size=1, max_size=3))
    if draw(st.booleans()):
        tokens = [*tokens[:-1], ">"] if len(tokens) > 1 or draw(st.booleans()) else tokens
    return ".".join(tokens)


def naiveMatches(pattern: str, topic: str) -> bool:
    """
    The reference: the pattern as a regular expression over the whole topic.
    """
    parts = []
    for token in pattern.split("."):
        parts.append({"*": r"[^.]*", ">": r"[^.]*(\.[^.]*)*"}.get(token, re.escape(token)))
    return re.fullmatch(r"\.".join(parts), topic) is not None


UNIVERSE = [".".join(tokens) for size in range(1, 6) for tokens in itertools.product([*TOKENS, "d"], repeat=size)]


class MatchTests(SynchronousTestCase):
    def test_examples(self) -> None:
        self.assertTrue(matches("news.*", "news.eu"))
        self.assertFalse(matches("news.*", "news.eu.fr"))
        self.assertFalse(matches("news.*", "news"))
        self.assertTrue(matches("news.>", "news.eu"))
        self.assertTrue(matches("news.>", "news.eu.fr"))
        self.assertFalse(matches("news.>", "news"))
        self.assertTrue(matches(">", "anything.at.all"))
        self.assertTrue(matches("*.eu", "news.eu"))
        self.assertTrue(matches("news", "news"))
        self.assertFalse(matches("news", "news.eu"))

    @settings(derandomize=True, max_examples=500)
    @given(patterns(), topicsStrategy)
    def test_againstReference(self, pattern: str, topic: str) -> None:
        self.assertEqual(matches(pattern, topic), naiveMatches(pattern, topic), (pattern, topic))

    @settings(derandomize=True, max_examples=300)
    @given(st.lists(patterns(), min_size=0, max_size=12), st.lists(topicsStrategy, min_size=1, max_size=5))
    def test_trieAgainstReference(self, filed: list[str], topics: list[str]) -> None:
        """
        The trie gives exactly the values whose pattern matches, after adds and
        removals in any order.
        """
        trie: TopicTrie[int] = TopicTrie()
        for index, pattern in enumerate(filed):
            trie.add(pattern, index)
        removed = set(range(0, len(filed), 3))
        for index in removed:
            trie.discard(filed[index], index)
        kept = {index: pattern for index, pattern in enumerate(filed) if index not in removed}
        for topic in topics:
            expected = {index for index, pattern in kept.items() if naiveMatches(pattern, topic)}
            self.assertEqual(trie.match(topic), expected, (kept, topic))
        self.assertEqual(len(trie), len(kept))

    def test_trieForgetsEmptyBranches(self) -> None:
        trie: TopicTrie[str] = TopicTrie()
        for pattern in ["a.b.c", "a.*.c", "a.>", "x"]:
            trie.add(pattern, "v")
        trie.add("a.b.c", "v")  # twice is once
        self.assertEqual(len(trie), 4)
        for pattern in ["a.b.c", "a.*.c", "a.>", "x", "never.added"]:
            trie.discard(pattern, "v")
        self.assertEqual(len(trie), 0)
        self.assertTrue(trie._root.empty())

    @settings(derandomize=True, max_examples=500)
    @given(patterns(), patterns())
    def test_coversAgainstReference(self, general: str, specific: str) -> None:
        """
        C{covers(P, Q)} holds exactly when every topic (of a universe long enough to
        tell the patterns apart) that Q matches, P matches too.
        """
        expected = all(naiveMatches(general, topic) for topic in UNIVERSE if naiveMatches(specific, topic))
        self.assertEqual(covers(general, specific), expected, (general, specific))


class PatternSyntaxTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for pattern in ["news", "news.*", "news.>", "*.eu", "*", ">", "a.*.c.>"]:
            self.assertIsNone(checkPattern(pattern), pattern)
        self.assertTrue(isPattern("a.*"))
        self.assertFalse(isPattern("a.b"))

    def test_invalid(self) -> None:
        self.assertEqual(checkWildcards("a.>.b"), "'>' must be the last token of a pattern")
        for pattern in ["news*", "news.*x", "a.>>", "n>"]:
            self.assertIn("whole tokens", checkPattern(pattern), pattern)
        self.assertEqual(checkPattern(""), "Topic must not be empty")
        self.assertEqual(checkPattern("a b"), "Topic must not contain whitespace or control characters")

    def test_publishingToAPattern(self) -> None:
        for topic in ["news.*", "news.>", "*"]:
            self.assertEqual(checkTopic(topic), "Topic must not contain '*' or '>' (reserved for wildcards)")


class RegistryTests(SynchronousTestCase):
    """
    The subscriber's registry: exact topics and patterns together, each client once.
    """

    def test_overlapsDeliverOnce(self) -> None:
        registry = TopicRegistry()
        alice, bob = object(), object()
        for pattern in ["news.eu", "news.*", "news.>"]:
            registry.subscribe(pattern, alice)  # type: ignore[arg-type]
        registry.subscribe("news.eu", bob)  # type: ignore[arg-type]
        self.assertEqual(registry.subscribers("news.eu"), {alice, bob})
        self.assertEqual(registry.subscribers("news.eu.fr"), {alice})
        self.assertEqual(registry.subscribers("sport"), set())
        self.assertEqual((registry.topics, registry.patterns), (1, 2))

    def test_changesSeenThroughTheCache(self) -> None:
        registry = TopicRegistry()
        alice, bob = object(), object()
        registry.subscribe("news.*", alice)  # type: ignore[arg-type]
        self.assertEqual(registry.subscribers("news.eu"), {alice})
        registry.subscribe("news.eu", bob)  # type: ignore[arg-type]
        self.assertEqual(registry.subscribers("news.eu"), {alice, bob})
        registry.unsubscribe("news.*", alice)  # type: ignore[arg-type]
        self.assertEqual(registry.subscribers("news.eu"), {bob})
        registry.unsubscribe("news.eu", bob)  # type: ignore[arg-type]
        self.assertEqual(registry.subscribers("news.eu"), set())
        self.assertEqual((registry.topics, registry.patterns), (0, 0))

    def test_manyPatternsBoundedCache(self) -> None:
        registry = TopicRegistry()
        client = object()
        registry.subscribe("t.*", client)  # type: ignore[arg-type]
        for index in range(25_000):
            self.assertEqual(registry.subscribers(f"t.{index}"), {client})
        self.assertLessEqual(len(registry._matches), 10_000)
