# -*- test-case-name: tests.test_topics -*-
"""
Topic patterns with NATS's wildcards: topics are C{.}-separated tokens; in a
subscription (or an ACL rule), C{*} stands for exactly one token and C{>}, as the
last token, for one or more (C{news.*} matches C{news.eu}, not C{news.eu.fr};
C{news.>} matches both).  Published topics never hold C{*} or C{>}
(L{wsqueue.wire.checkTopic}), so a topic matches itself as a pattern.

L{TopicTrie} finds every pattern that matches a topic by walking the topic's
tokens through a trie of the patterns: the cost grows with the topic's length and
with the wildcards on its path, not with how many subscriptions there are.
"""

from __future__ import annotations

from typing import Generic, TypeVar

SEPARATOR = "."
ONE = "*"
REST = ">"

T = TypeVar("T")


def isPattern(pattern: str) -> bool:
    """
    Whether C{pattern} holds a wildcard token (C{*} or C{>}).
    """
    return ONE in pattern or REST in pattern


def checkWildcards(pattern: str) -> str | None:
    """
    Say what is wrong with the wildcards of C{pattern}, or L{None}: C{*} and C{>}
    must be whole tokens, and C{>} the last one.  (The rest of a topic's rules are
    L{wsqueue.wire.checkTopic}'s.)
    """
    if not isPattern(pattern):
        return None
    tokens = pattern.split(SEPARATOR)
    for index, token in enumerate(tokens):
        if (ONE in token or REST in token) and token not in (ONE, REST):
            return f"'*' and '>' must be whole tokens between dots (as in news.* or news.>), not {token!r}"
        if token == REST and index != len(tokens) - 1:
            return "'>' must be the last token of a pattern"
    return None


def matches(pattern: str, topic: str) -> bool:
    """
    Whether C{topic} matches C{pattern}.
    """
    if not isPattern(pattern):
        return pattern == topic
    wanted, tokens = pattern.split(SEPARATOR), topic.split(SEPARATOR)
    for index, token in enumerate(wanted):
        if token == REST:
            return len(tokens) > index
        if index >= len(tokens) or (token != ONE and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def covers(general: str, specific: str) -> bool:
    """
    Whether every topic that matches the pattern C{specific} also matches
    C{general}: an ACL rule C{news.>} allows subscribing to C{news.*}, a rule
    C{news.*} does not allow C{news.>}.
    """
    outer, inner = general.split(SEPARATOR), specific.split(SEPARATOR)
    for index, token in enumerate(outer):
        if token == REST:
            return len(inner) > index
        if index >= len(inner):
            return False
        if token == ONE:
            if inner[index] == REST:
                return False
        elif token != inner[index]:
            return False
    return len(inner) == len(outer)


class _Node(Generic[T]):
    __slots__ = ("children", "exact", "one", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.one: _Node[T] | None = None
        self.exact: set[T] = set()
        """What subscribed to the pattern that ends here."""
        self.rest: set[T] = set()
        """What subscribed to this node's pattern followed by C{.>}."""

    def empty(self) -> bool:
        return not (self.children or self.one or self.exact or self.rest)


class TopicTrie(Generic[T]):
    """
    Values (clients, rules) filed under patterns; L{match} gives every value whose
    pattern matches a topic, each once.
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._entries = 0

    def __len__(self) -> int:
        """
        How many (pattern, value) entries are filed.
        """
        return self._entries

    def add(self, pattern: str, value: T) -> None:
        node = self._root
        tokens = pattern.split(SEPARATOR)
        for token in tokens[:-1] if tokens[-1] == REST else tokens:
            if token == ONE:
                if node.one is None:
                    node.one = _Node()
                node = node.one
            else:
                child = node.children.get(token)
                if child is None:
                    child = node.children[token] = _Node()
                node = child
        held = node.rest if tokens[-1] == REST else node.exact
        if value not in held:
            held.add(value)
            self._entries += 1

    def discard(self, pattern: str, value: T) -> None:
        """
        Remove C{value} from C{pattern}, and the branches that held nothing else.
        """
        tokens = pattern.split(SEPARATOR)
        path = tokens[:-1] if tokens[-1] == REST else tokens
        nodes = [self._root]
        for token in path:
            node = nodes[-1]
            child = node.one if token == ONE else node.children.get(token)
            if child is None:
                return
            nodes.append(child)
        held = nodes[-1].rest if tokens[-1] == REST else nodes[-1].exact
        if value not in held:
            return
        held.discard(value)
        self._entries -= 1
        for depth in range(len(path), 0, -1):
            node = nodes[depth]
            if not node.empty():
                break
            parent, token = nodes[depth - 1], path[depth - 1]
            if token == ONE:
                parent.one = None
            else:
                del parent.children[token]

    def match(self, topic: str) -> set[T]:
        """
        Every value whose pattern matches C{topic}.
        """
        tokens = topic.split(SEPARATOR)
        last = len(tokens)
        found: set[T] = set()
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if index == last:
                found |= node.exact
                continue
            if node.rest:
                found |= node.rest
            child = node.children.get(tokens[index])
            if child is not None:
                stack.append((child, index + 1))
            if node.one is not None:
                stack.append((node.one, index + 1))
        return found
