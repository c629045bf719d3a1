# -*- test-case-name: tests.test_store_redis -*-
"""
A L{IMessageStore} in Redis, which any number of msgqueue daemons can share.

Every store method is one Lua script, run atomically by Redis, so daemons sharing
a queue never see each other's operations half done.  The keys of one queue share
the prefix C{wsqueue:{QUEUE}:} (one hash tag: every key of a queue lives in one
Cluster slot):

  - C{meta} (hash): C{epoch}, C{first} (the lowest offset still held), C{last}
    (the highest offset allocated), C{bytes} (UTF-8 bytes of the held topics and
    contents), C{layout} (the version of this key layout), C{needed} (the lowest
    offset a group still needs), C{historyKeep} (how many entries are kept for
    history beyond that), C{indexedFrom} (the lowest offset the history index
    covers);
  - C{ti:TOPIC} (sorted set): the offsets of a topic's held entries, the index of
    history reads; C{topics} (set): the topics that have one;
  - C{stream} (stream): one entry per message, with ID C{OFFSET-0} and fields
    C{t} (topic), C{c} (content), C{s} (when it was stored).  Offsets are allocated
    by the append script from C{meta.last}, so they are the same integers for
    every daemon, and C{XRANGE}/C{XTRIM MINID} work on offsets directly;
  - C{groups} (hash): group -> the next offset it has never seen;
    C{active} (sorted set): group -> when it last read or acknowledged;
  - per group G: C{gp:G} (hash) offset -> C{"DELIVERIES ALONE CONSUMER"} for every
    entry delivered and not acknowledged (CONSUMER empty once given back);
    C{go:G} (sorted set) the same offsets, by offset (the oldest one bounds
    trimming); C{gr:G} (sorted set) the given-back offsets, handed out again
    first; C{gt:G} (sorted set) the offsets a consumer holds, by delivery time
    (for the ack wait);
  - C{producers} (hash) producer -> highest sequence number stored;
    C{produced} (sorted set) producer -> when, to forget the least recent ones;
  - C{dead} (list): dead letters as JSON, oldest first;
  - C{presence} (hash): daemon -> JSON C{[until, [groups]]}, the groups with a consumer
    connected to that daemon, so that no daemon takes a group read through another for
    an absent one (backlog trimming, group expiry).

Redis's own consumer groups (C{XREADGROUP}, C{XPENDING}, C{XCLAIM}) cannot express
the store contract (entries given back but not yet claimed, deliveries alone,
isolation for a consumer holding nothing, an ack of a given-back entry being
ignored), so groups are kept in the keys above, next to the stream, by the same
scripts.

Times (delivery, storage, group activity) are the ones the store is given
(C{now}), not Redis's clock: daemons sharing a queue need loosely synchronised
clocks (NTP), or the ack wait, age retention and group expiry of one will act on
another's entries early or late by the difference.

C{retained} is read synchronously by the broker: it is the stream's length as the
last operation of this daemon saw it, so with several daemons it may lag behind
between operations.  Redis keeps no checksums here: C{damagedEntries} is always 0.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsqueue.store.base import ISOLATE_AFTER, DeadLetter, Entry, History, IMessageStore, PendingEntry
from wsqueue.store.sqlite import StoreError
from wsqueue.topics import isPattern, matches

LAYOUT = 1
"""The version of the key layout above, kept in C{meta.layout}."""
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_QUEUE = "msgqueue"
CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0
"""Seconds a command may go unanswered before its connection is dropped and remade."""
MAX_PRODUCERS_REMEMBERED = 100_000
"""How many producers' last sequence numbers are kept, most recently seen kept."""
MAX_DEAD_LETTERS = 10_000
"""How many dead letters are kept, newest kept."""
PRESENCE_TTL = 5.0
"""Seconds a daemon's word that it serves some groups holds: it says so again at every
maintenance run (once a second), so a daemon that died is forgotten after this."""


class RedisStoreError(StoreError):
    """
    Redis cannot be reached or refused an operation; the message is one line
    naming the server (never its password).
    """


@dataclass(frozen=True)
class RedisAddress:
    """
    Where the queue's Redis is: a server, or a master that Sentinels name.
    """

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    masterName: str | None = None

    def describe(self) -> str:
        """
        How error messages name the server: C{HOST:PORT}, or the master and its Sentinels.
        """
        if self.sentinels:
            where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"master {self.masterName} (Sentinels {where})"
        return f"{self.host}:{self.port}"


def _port(text: str, default: int, spec: str) -> int:
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{spec!r}: {text!r} is not a port number")
    return int(text)


def _db(text: str, spec: str) -> int:
    text = text.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"{spec!r}: the database must be a number, not {text!r}")
    return int(text)


def _hostPort(item: str, default: int, spec: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"{spec!r} has no host")
    return host, _port(port, default, spec)


def parseRedisURL(spec: str) -> RedisAddress:
    """
    Read C{redis://[USER:PASSWORD@]HOST[:PORT][/DB]}, C{rediss://...} (TLS), or
    C{redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTERNAME[/DB]};
    raise L{ValueError} saying what is wrong.  User and password may be
    percent-encoded; they are the master's (Sentinels are asked without them).
    """
    parts = urlsplit(spec)
    if parts.scheme not in ("redis", "rediss", "redis+sentinel"):
        raise ValueError(f"{spec!r} is not a redis://, rediss:// or redis+sentinel:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{spec!r}: a Redis URL takes no ?query or #fragment")
    userInfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userInfo:
        user, sep, secret = userInfo.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if sep else (None, unquote(user))
    if parts.scheme == "redis+sentinel":
        sentinels = tuple(_hostPort(item, DEFAULT_SENTINEL_PORT, spec) for item in hosts.split(","))
        name, _, db = parts.path.lstrip("/").partition("/")
        if not name:
            raise ValueError(f"{spec!r} names no master: redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME/DB")
        return RedisAddress("", 0, _db(db, spec), username, password, False, sentinels, unquote(name))
    if "," in hosts:
        raise ValueError(f"{spec!r}: several hosts need redis+sentinel://")
    host, port = _hostPort(hosts, DEFAULT_PORT, spec)
    return RedisAddress(host, port, _db(parts.path, spec), username, password, parts.scheme == "rediss")


# Every script gets KEYS[1] = the queue's meta key (so that a Cluster routes it to
# the queue's slot) and ARGV[1] = the queue's key prefix; the other keys are named
# from the prefix (all in the same slot by the hash tag).
_PRELUDE = r"""
local P = ARGV[1]
local META, STREAM, GROUPS, ACTIVE, DEAD = KEYS[1], P .. 'stream', P .. 'groups', P .. 'active', P .. 'dead'
local function id(offset) return string.format('%d-0', offset) end
local function offsetOf(streamId) return tonumber(string.match(streamId, '^(%d+)')) end
local function groupKeys(g) return P .. 'gp:' .. g, P .. 'go:' .. g, P .. 'gr:' .. g, P .. 'gt:' .. g end
local function parse(state)
  local d, a, c = string.match(state, '^(%d+) (%d+) (.*)$')
  return tonumber(d), tonumber(a), c
end
local function state(d, a, c) return string.format('%d %d %s', d, a, c) end
-- Variadic commands in slices, well below Lua's limit on unpack()ed arguments.
local function each(command, key, values, width)
  local step = 1000 * width
  for i = 1, #values, step do
    redis.call(command, key, unpack(values, i, math.min(i + step - 1, #values)))
  end
end
-- What the store holds: {entries, entries some group still needs}; the rest are kept
-- only for history (meta.historyKeep of the newest, see trim).
local function held()
  local len = redis.call('XLEN', STREAM)
  local needed = tonumber(redis.call('HGET', META, 'needed') or '0') or 0
  local first = tonumber(redis.call('HGET', META, 'first') or '1')
  local backlog = tonumber(redis.call('HGET', META, 'last') or '0') + 1 - math.max(needed, first)
  return {len, math.max(0, math.min(len, backlog)), tonumber(redis.call('HGET', META, 'bytes') or '0')}
end
local function pairsOf(offsets, score)
  local out = {}
  for _, o in ipairs(offsets) do out[#out + 1] = score or o; out[#out + 1] = o end
  return out
end
-- Forget pending entries of a group (acknowledged, trimmed, or given up on).
local function forget(g, offsets)
  if #offsets == 0 then return end
  local gp, go, gr, gt = groupKeys(g)
  each('HDEL', gp, offsets, 1); each('ZREM', go, offsets, 1); each('ZREM', gr, offsets, 1); each('ZREM', gt, offsets, 1)
end
-- Take the offsets below cut out of the per-topic history index of these topics
-- (a set: topic -> true), and a topic with none left out of the list of topics.
local function unindex(topics, cut)
  for topic in pairs(topics) do
    local key = P .. 'ti:' .. topic
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cut)
    if redis.call('ZCARD', key) == 0 then
      redis.call('DEL', key)
      redis.call('SREM', P .. 'topics', topic)
    end
  end
end
-- Drop the stream entries below offset cut, keeping meta.first, meta.bytes and the index.
local function dropBelow(cut)
  local first = tonumber(redis.call('HGET', META, 'first'))
  if cut <= first then return end
  local size, topics = 0, {}
  for from = first, cut - 1, 1000 do
    for _, row in ipairs(redis.call('XRANGE', STREAM, id(from), id(math.min(cut - 1, from + 999)))) do
      size = size + #row[2][2] + #row[2][4]
      topics[row[2][2]] = true
    end
  end
  redis.call('XTRIM', STREAM, 'MINID', id(cut))
  redis.call('HSET', META, 'first', cut)
  redis.call('HINCRBY', META, 'bytes', -size)
  unindex(topics, cut)
end
-- Drop what no group needs any more; with no group, everything is kept for the first.
local function trim()
  local groups = redis.call('HGETALL', GROUPS)
  if #groups == 0 then
    redis.call('HSET', META, 'needed', redis.call('HGET', META, 'first'))
    return
  end
  local lowest
  for i = 1, #groups, 2 do
    local low = tonumber(groups[i + 1])
    local head = redis.call('ZRANGE', P .. 'go:' .. groups[i], 0, 0)[1]
    if head and tonumber(head) < low then low = tonumber(head) end
    if lowest == nil or low < lowest then lowest = low end
  end
  redis.call('HSET', META, 'needed', lowest)
  -- The newest historyKeep entries stay for history reads once every group has them.
  local keep = tonumber(redis.call('HGET', META, 'historyKeep') or '0') or 0
  dropBelow(math.min(lowest, tonumber(redis.call('HGET', META, 'last')) + 1 - keep))
end
-- The groups with a consumer connected to any daemon sharing the queue.  Each daemon
-- says which groups it serves (ARGV[first]: its id, ARGV[first + 1]: now, ARGV[first + 2]:
-- for how many seconds that holds, then the groups) whenever it trims backlogs or
-- expires groups; a daemon that stops saying so (it died) is forgotten once that expires.
local function activeGroups(first)
  local PRESENCE = P .. 'presence'
  local me, now, ttl = ARGV[first], tonumber(ARGV[first + 1]), tonumber(ARGV[first + 2])
  local mine = {}
  for i = first + 3, #ARGV do mine[#mine + 1] = ARGV[i] end
  redis.call('HSET', PRESENCE, me, cjson.encode({now + ttl, mine}))
  local active = {}
  local all = redis.call('HGETALL', PRESENCE)
  for i = 1, #all, 2 do
    local said = cjson.decode(all[i + 1])
    if said[1] < now then
      redis.call('HDEL', PRESENCE, all[i])
    else
      for _, g in ipairs(said[2]) do active[g] = true end
    end
  end
  return active
end
"""

# Keeps atomic: the producer-sequence check, the offsets allocated, the entries
# added and the producer's new highest number.  The XADDs come first: the first
# write is the only one that can fail (another type at the stream's key, Redis out
# of memory: after a script's first write Redis no longer refuses its writes), so a
# failed append leaves nothing behind.
_APPEND = r"""
local now, check, producer, maxProducers, channel = ARGV[2], ARGV[3] == '1', ARGV[4], tonumber(ARGV[5]), ARGV[6]
-- The messages come as one JSON array of [seq, topic, content]: one argument to
-- encode and send instead of three per message.
local items = cjson.decode(ARGV[7])
local n = #items
local previous = 0
if check then previous = tonumber(redis.call('HGET', P .. 'producers', producer)) or 0 end
local last = tonumber(redis.call('HGET', META, 'last'))
local offsets, highest, size, stored = {}, previous, 0, 0
for i = 1, n do
  local seq = items[i][1]
  if check and seq > highest then highest = seq end
  if check and seq <= previous then offsets[i] = 0 else last = last + 1; offsets[i] = last end
end
for i = 1, n do
  if offsets[i] > 0 then
    local topic, content = items[i][2], items[i][3]
    redis.call('XADD', STREAM, id(offsets[i]), 't', topic, 'c', content, 's', now)
    size = size + #topic + #content
    stored = stored + 1
  end
end
-- The per-topic index of history reads (ti:TOPIC, offsets by offset; topics: which
-- exist), kept while history is (meta.historyKeep); what is appended without it
-- cannot be found by topic, so history is complete only from meta.indexedFrom on.
if (tonumber(redis.call('HGET', META, 'historyKeep') or '0') or 0) > 0 then
  for i = 1, n do
    if offsets[i] > 0 then
      redis.call('ZADD', P .. 'ti:' .. items[i][2], offsets[i], offsets[i])
      redis.call('SADD', P .. 'topics', items[i][2])
    end
  end
elseif stored > 0 then
  redis.call('HSET', META, 'indexedFrom', last + 1)
end
redis.call('HSET', META, 'last', last)
if size > 0 then redis.call('HINCRBY', META, 'bytes', size) end
if check then
  redis.call('HSET', P .. 'producers', producer, highest)
  redis.call('ZADD', P .. 'produced', now, producer)
  local excess = redis.call('ZCARD', P .. 'produced') - maxProducers
  if excess > 0 then
    local gone = redis.call('ZPOPMIN', P .. 'produced', excess)
    for i = 1, #gone, 2 do redis.call('HDEL', P .. 'producers', gone[i]) end
  end
end
-- With --redis-min-replicas the entries are announced once a replica has them (confirm).
if stored > 0 and ARGV[8] == '1' then redis.call('PUBLISH', channel, last) end
return {held(), cjson.encode(offsets), last}
"""

# Keeps atomic: creating the group, dead-lettering spent entries, handing out
# given-back then new entries (isolation included), and moving the group's position.
_READ_GROUP = r"""
local now, G, C, count, maxDeliver = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local confirmedOnly = ARGV[7] == '1'  -- --redis-min-replicas: only what a replica has
local gp, go, gr, gt = groupKeys(G)
local nextOffset = tonumber(redis.call('HGET', GROUPS, G))
if nextOffset == nil then
  nextOffset = tonumber(redis.call('HGET', META, 'first'))
  redis.call('HSET', GROUPS, G, nextOffset)
end
redis.call('ZADD', ACTIVE, now, G)
local result, handed = {}, 0
local function fields(offset) return redis.call('XRANGE', STREAM, id(offset), id(offset))[1][2] end
local function head()
  local offset = redis.call('ZRANGE', gr, 0, 0)[1]
  if offset == nil then return nil end
  local d, a = parse(redis.call('HGET', gp, offset))
  return offset, d, a
end
local function deadLetterSpent()
  local moved = false
  while maxDeliver do
    local offset, d, a = head()
    if offset == nil or a < maxDeliver then break end
    local f = fields(offset)
    forget(G, {offset})
    redis.call('RPUSH', DEAD, cjson.encode({G, tonumber(offset), f[2], f[4], d, now}))
    moved = true
  end
  if moved then redis.call('LTRIM', DEAD, -@MAX_DEAD_LETTERS@, -1) end
  return moved
end
local function handOut(offset, d, a, alone)
  d = d + 1
  if alone then a = a + 1 end
  redis.call('HSET', gp, offset, state(d, a, C))
  redis.call('ZREM', gr, offset)
  redis.call('ZADD', gt, now, offset)
  local f = fields(offset)
  result[#result + 1] = tonumber(offset); result[#result + 1] = f[2]; result[#result + 1] = f[4]
  result[#result + 1] = d
  handed = handed + 1
end
local function holds(consumer)
  for _, s in ipairs(redis.call('HVALS', gp)) do
    local _, _, c = parse(s)
    if c == consumer then return true end
  end
  return false
end
local deadLettered = deadLetterSpent()
local offset, d, a = head()
if offset and count > 0 and d >= @ISOLATE_AFTER@ then
  -- The oldest given-back entry came back more than once: it goes alone, to a
  -- consumer holding nothing else, so that only it is blamed if it fails.
  if not holds(C) then handOut(offset, d, a, true) end
else
  while handed < count do
    if deadLetterSpent() then deadLettered = true end
    offset, d, a = head()
    if offset == nil then break end
    handOut(offset, d, a, false)
  end
  local last = tonumber(redis.call('HGET', META, 'last'))
  if confirmedOnly then last = tonumber(redis.call('HGET', META, 'confirmed')) or 0 end
  if handed < count and nextOffset <= last then
    local states, heads, times = {}, {}, {}
    for _, row in ipairs(redis.call('XRANGE', STREAM, id(nextOffset), id(last), 'COUNT', count - handed)) do
      local o = offsetOf(row[1])
      result[#result + 1] = o; result[#result + 1] = row[2][2]; result[#result + 1] = row[2][4]
      result[#result + 1] = 1
      states[#states + 1] = o; states[#states + 1] = state(1, 0, C)
      heads[#heads + 1] = o
      handed = handed + 1
      nextOffset = o + 1
    end
    each('HSET', gp, states, 2); each('ZADD', go, pairsOf(heads), 2); each('ZADD', gt, pairsOf(heads, now), 2)
    redis.call('HSET', GROUPS, G, nextOffset)
  end
end
if deadLettered then trim() end
-- One JSON string: one reply to parse instead of four per entry.
if #result == 0 then return {held(), '[]'} end
return {held(), cjson.encode(result)}
"""

# Keeps atomic: removing the acknowledged entries from the group and trimming
# what no group needs any more.
_ACK = r"""
local now, G = ARGV[2], ARGV[3]
if redis.call('HEXISTS', GROUPS, G) == 0 then return {held(), 0} end
redis.call('ZADD', ACTIVE, now, G)
local gp = groupKeys(G)
local offsets, acked, seen = {}, {}, {}
for i = 4, #ARGV do offsets[#offsets + 1] = ARGV[i] end
for i = 1, #offsets, 1000 do
  local slice = {unpack(offsets, i, math.min(i + 999, #offsets))}
  local states = redis.call('HMGET', gp, unpack(slice))
  for j, s in ipairs(slice) do
    if states[j] and not seen[s] then
      seen[s] = true
      local _, _, c = parse(states[j])
      if c ~= '' then acked[#acked + 1] = s end
    end
  end
end
forget(G, acked)
trim()
return {held(), #acked}
"""

# Keeps atomic: giving back every entry one consumer holds.
_RELEASE = r"""
local G, C = ARGV[3], ARGV[4]
local gp, go, gr, gt = groupKeys(G)
local released = {}
if C ~= '' then
  local all = redis.call('HGETALL', gp)
  for i = 1, #all, 2 do
    local d, a, c = parse(all[i + 1])
    if c == C then
      redis.call('HSET', gp, all[i], state(d, a, ''))
      released[#released + 1] = all[i]
    end
  end
  each('ZADD', gr, pairsOf(released), 2); each('ZREM', gt, released, 1)
end
return {held(), #released}
"""

# Keeps atomic: giving back, in every group, the entries held since before the deadline.
_RELEASE_EXPIRED = r"""
local deadline = ARGV[3]
local reply = {held()}
for _, g in ipairs(redis.call('HKEYS', GROUPS)) do
  local gp, go, gr, gt = groupKeys(g)
  local expired = redis.call('ZRANGEBYSCORE', gt, '-inf', '(' .. deadline)
  for _, o in ipairs(expired) do
    local d, a = parse(redis.call('HGET', gp, o))
    redis.call('HSET', gp, o, state(d, a, ''))
    reply[#reply + 1] = g; reply[#reply + 1] = tonumber(o)
  end
  each('ZADD', gr, pairsOf(expired), 2); each('ZREM', gt, expired, 1)
end
return reply
"""

# Keeps atomic: dropping the oldest entries past the limits, moving every group
# past them and counting what each lost.
_RETENTION = r"""
local now, maxMessages, maxBytes, maxAge = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local first, last = tonumber(redis.call('HGET', META, 'first')), tonumber(redis.call('HGET', META, 'last'))
local bytes = tonumber(redis.call('HGET', META, 'bytes'))
local oldest = maxAge and now - maxAge
local countCut = maxMessages and last + 1 - maxMessages or first
local cut, size, done, topics = first, 0, false, {}
while not done and cut <= last do
  local rows = redis.call('XRANGE', STREAM, id(cut), '+', 'COUNT', 500)
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    local entrySize = #row[2][2] + #row[2][4]
    if cut < countCut or (maxBytes and bytes - size > maxBytes) or (oldest and tonumber(row[2][6]) < oldest) then
      size = size + entrySize
      topics[row[2][2]] = true
      cut = offsetOf(row[1]) + 1
    else
      done = true
      break
    end
  end
end
local reply = {}
if cut > first then
  local groups = redis.call('HGETALL', GROUPS)
  for i = 1, #groups, 2 do
    local g, nextOffset = groups[i], tonumber(groups[i + 1])
    local gp, go = groupKeys(g)
    local below = redis.call('ZRANGEBYSCORE', go, '-inf', '(' .. cut)
    local lost = #below + math.max(0, cut - math.max(nextOffset, first))
    forget(g, below)
    if nextOffset < cut then redis.call('HSET', GROUPS, g, cut) end
    if lost > 0 then reply[#reply + 1] = g; reply[#reply + 1] = lost end
  end
  redis.call('XTRIM', STREAM, 'MINID', id(cut))
  redis.call('HSET', META, 'first', cut)
  redis.call('HINCRBY', META, 'bytes', -size)
  unindex(topics, cut)
end
table.insert(reply, 1, held())
return reply
"""

# Keeps atomic: moving every absent group with too long a backlog past its oldest
# entries, and trimming what no group needs any more.
_TRIM_BACKLOG = r"""
local maxBacklog = tonumber(ARGV[2])
local active = activeGroups(3)
local last = tonumber(redis.call('HGET', META, 'last'))
local groups = redis.call('HGETALL', GROUPS)
local reply = {}
for i = 1, #groups, 2 do
  local g, nextOffset = groups[i], tonumber(groups[i + 1])
  if not active[g] then
    local gp, go = groupKeys(g)
    local pending = redis.call('ZCARD', go)
    local excess = pending + (last + 1 - nextOffset) - maxBacklog
    if excess > 0 then
      reply[#reply + 1] = g; reply[#reply + 1] = excess
      -- The oldest first: pending entries are all older than the unseen ones.
      local fromPending = math.min(excess, pending)
      if fromPending > 0 then forget(g, redis.call('ZRANGE', go, 0, fromPending - 1)) end
      if excess > fromPending then redis.call('HSET', GROUPS, g, nextOffset + excess - fromPending) end
    end
  end
end
if #reply > 0 then trim() end
table.insert(reply, 1, held())
return reply
"""

# Keeps atomic: removing the idle groups and trimming what they held back.
_EXPIRE_GROUPS = r"""
local deadline = ARGV[2]
local active = activeGroups(3)
local reply = {}
for _, g in ipairs(redis.call('ZRANGEBYSCORE', ACTIVE, '-inf', '(' .. deadline)) do
  if not active[g] then
    local gp, go, gr, gt = groupKeys(g)
    redis.call('DEL', gp, go, gr, gt)
    redis.call('HDEL', GROUPS, g)
    redis.call('ZREM', ACTIVE, g)
    reply[#reply + 1] = g
  end
end
trim()
table.insert(reply, 1, held())
return reply
"""

# Keeps atomic: raising the highest offset a replica is known to have (entries up to
# it may be handed out: see RedisStore.minReplicas) and announcing it.
_CONFIRM = r"""
local upTo, channel = tonumber(ARGV[2]), ARGV[3]
local confirmed = tonumber(redis.call('HGET', META, 'confirmed')) or 0
if upTo > confirmed then
  redis.call('HSET', META, 'confirmed', upTo)
  redis.call('PUBLISH', channel, upTo)
end
return {held()}
"""

QUEUE_GONE = "WSQUEUE_GONE"
"""The error every script but C{open} answers when the queue's meta data is missing."""

# Every operation but opening: a Redis that came back empty (no persistence, a
# FLUSHALL, a replica promoted without the data) has no queue any more.  Refuse,
# rather than run on a missing offset counter, so that the store opens the queue
# again (a new epoch) instead of failing every operation until restarted.
_QUEUE_GONE_GUARD = r"""
if redis.call('HEXISTS', META, 'last') == 0 then
  return redis.error_reply('WSQUEUE_GONE the queue is not in Redis any more')
end
"""

# History (IMessageStore.history): the offsets above ARGV[2] of each topic named from
# ARGV[4] on, from the per-topic index (ti:TOPIC), at most ARGV[3] of them (one more
# says there are more), then those entries from the stream.
_HISTORY = r"""
local after, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local found = {}
for i = 4, #ARGV do
  for _, o in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ti:' .. ARGV[i], '(' .. after, '+inf', 'LIMIT', 0, limit + 1)) do
    found[#found + 1] = tonumber(o)
  end
end
table.sort(found)
local out = {}
if #found <= limit then
  for _, o in ipairs(found) do
    local row = redis.call('XRANGE', STREAM, id(o), id(o))[1]
    if row then out[#out + 1] = {o, row[2][2], row[2][4]} end
  end
end
return {held(), redis.call('HGET', META, 'epoch'), tonumber(redis.call('HGET', META, 'first')),
        tonumber(redis.call('HGET', META, 'last')), tonumber(redis.call('HGET', META, 'indexedFrom') or '1'),
        #out == 0 and '[]' or cjson.encode(out), #found}
"""

# Keeps atomic: creating the queue's meta data once (the epoch above all), whichever
# daemon comes first.
_OPEN = r"""
redis.call('HSETNX', META, 'epoch', ARGV[2])
redis.call('HSETNX', META, 'layout', ARGV[3])
redis.call('HSETNX', META, 'first', 1)
redis.call('HSETNX', META, 'last', 0)
redis.call('HSETNX', META, 'bytes', 0)
redis.call('HSET', META, 'historyKeep', ARGV[4])
redis.call('HSETNX', META, 'indexedFrom', tonumber(redis.call('HGET', META, 'last')) + 1)
return {redis.call('HGET', META, 'epoch'), tonumber(redis.call('HGET', META, 'layout')), redis.call('XLEN', STREAM)}
"""


class _Script:
    """
    A Lua script with the prelude, its constants filled in, and its SHA-1 for EVALSHA.
    """

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        guard = "" if name == "open" else _QUEUE_GONE_GUARD
        source = (_PRELUDE + guard + body).replace("@ISOLATE_AFTER@", str(ISOLATE_AFTER))
        self.source = source.replace("@MAX_DEAD_LETTERS@", str(MAX_DEAD_LETTERS))
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


SCRIPTS = {
    name: _Script(name, body)
    for name, body in (
        ("append", _APPEND),
        ("readGroup", _READ_GROUP),
        ("ack", _ACK),
        ("release", _RELEASE),
        ("releaseExpired", _RELEASE_EXPIRED),
        ("applyRetention", _RETENTION),
        ("trimGroupBacklog", _TRIM_BACKLOG),
        ("expireGroups", _EXPIRE_GROUPS),
        ("open", _OPEN),
        ("confirm", _CONFIRM),
        ("history", _HISTORY),
    )
}


def _number(value: float) -> str:
    """
    A time or limit as Redis reads it back exactly (a float's shortest repr).
    """
    return repr(float(value))


def _optional(value: float | None) -> str:
    return "" if value is None else _number(value)


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """
    Tells the store about connection attempts that fail while it is opening: with
    reconnection on, txredisapi would otherwise retry for ever without a word.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> Deferred:
        def report(reason: Failure) -> Failure:
            self._failed(reason)
            return reason

        return self._endpoint.connect(factory).addErrback(report)


@implementer(IStreamClientEndpoint)
class _SentinelMasterEndpoint:
    """
    Connects to the master the Sentinels name now, asked again before every
    attempt (txredisapi's own Sentinel endpoint offers no connection timeout choice
    and no way to report a failed discovery).
    """

    def __init__(self, reactor: Any, sentinel: Any, masterName: str, timeout: float) -> None:
        self._reactor = reactor
        self._sentinel = sentinel
        self._masterName = masterName
        self._timeout = timeout

    def connect(self, factory: Any) -> Deferred:
        def connect(address: tuple[str, int]) -> Deferred:
            host, port = address
            return HostnameEndpoint(self._reactor, host, port, timeout=self._timeout).connect(factory)

        return self._sentinel.discover_master(self._masterName).addCallback(connect)


@implementer(IMessageStore)
class RedisStore:
    """
    The queue in Redis (see the module docstring); open it with L{open} before use.

    @param address: where Redis is (see L{parseRedisURL}).
    @param tlsCreator: for C{rediss://}, the client TLS options (host name verified:
        L{wsqueue.tls.clientCreator}).
    @param queue: the name in the keys' prefix: daemons serving the same queue must agree.
    @param now: the time, for delivery and storage timestamps (a test passes a clock's).
    @param minReplicas: when above 0, an append fires only once C{WAIT} says that
        many replicas have it, and fails (the entries stay stored: a producer's
        resend is recognised) when fewer confirm within C{replicaTimeout} seconds.
        WAIT holds this daemon's connection meanwhile: its other commands queue up.
        New entries are handed out only up to the highest offset a replica is known
        to have (C{meta.confirmed}): an entry a fail-over then loses was never
        delivered, so its offset, given again by the promoted replica to another
        entry, cannot make a subscriber drop that entry as one it has seen.
    """

    log = Logger()
    damagedEntries = 0

    def __init__(
        self,
        address: RedisAddress,
        reactor: Any = None,
        tlsCreator: Any = None,
        queue: str = DEFAULT_QUEUE,
        now: Callable[[], float] = time.time,
        minReplicas: int = 0,
        replicaTimeout: float = 1.0,
        connectTimeout: float = CONNECT_TIMEOUT,
        replyTimeout: float = REPLY_TIMEOUT,
        historyKeep: int = 0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.address = address
        self.epoch = ""
        self.retained = 0
        self.backlog = 0
        self.retainedBytes = 0
        self.historyKeep = historyKeep
        self._reactor = reactor
        self._tlsCreator = tlsCreator
        self._prefix = f"wsqueue:{{{queue}}}:"
        self._meta = self._prefix + "meta"
        self._daemonId = uuid.uuid4().hex
        # Pub/sub channels are shared by every database of a server: the name says which.
        self._channel = f"{self._prefix}appended:{address.db}"
        self._now = now
        self._minReplicas = minReplicas
        self._replicaTimeout = replicaTimeout
        self._connectTimeout = connectTimeout
        self._replyTimeout = max(replyTimeout, replicaTimeout + 1) if minReplicas else replyTimeout
        self._factory: Any = None
        self._sentinel: Any = None
        self._subscriber: Any = None
        self._loaded: Any = None
        self._listeners: list[Callable[[int | None], object]] = []
        self.closed = False
        self._closing: Deferred[None] | None = None
        self._inFlight: set[Deferred[None]] = set()
        self._reopening = False

    # Connecting

    def _tcpEndpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._connectTimeout)
        if self._tlsCreator is not None:
            endpoint = wrapClientTLS(self._tlsCreator, endpoint)
        return endpoint

    def _endpoint(self) -> IStreamClientEndpoint:
        address = self.address
        if not address.sentinels:
            return self._tcpEndpoint(address.host, address.port)
        if self._sentinel is None:
            self._sentinel = txredisapi.Sentinel(list(address.sentinels), convertNumbers=False)
            self._sentinel.discovery_timeout = self._connectTimeout
        assert address.masterName is not None
        return _SentinelMasterEndpoint(self._reactor, self._sentinel, address.masterName, self._connectTimeout)

    def _makeFactory(self, subscriber: bool = False) -> Any:
        address = self.address
        options = {
            "dbid": address.db, "poolsize": 1, "isLazy": True, "charset": "utf-8", "password": address.password,
            "username": address.username, "convertNumbers": False,
        }
        if subscriber:
            factory = _SubscriberFactory(self._notify, self._channel)
            factory.password, factory.username = address.password, address.username
        elif address.sentinels:
            factory = txredisapi.SentinelConnectionFactory(
                sentinel_manager=self._sentinel, service_name=address.masterName, is_master=True, uuid=None,
                replyTimeout=self._replyTimeout, **options,
            )
        else:
            factory = txredisapi.RedisFactory(
                address.describe(), handler=txredisapi.ConnectionHandler, replyTimeout=self._replyTimeout, **options
            )
        # Reconnect quickly after a restart or fail-over, and never wait long.
        factory.initialDelay, factory.maxDelay = 0.2, 5
        return factory

    def open(self) -> Deferred[RedisStore]:
        """
        Connect, create the queue's meta data if it is new, and read the epoch; fire
        with the store, or fail with one L{RedisStoreError} line saying why Redis
        cannot be used ("cannot reach Redis at HOST:PORT: ...").  Until this has
        fired, every operation fails.  Later, a lost connection is remade by itself.

        A failed open stops connecting and may be tried again (msgqueue retries
        until Redis can be reached; see L{wsqueue.tap.msgqueue}).
        """
        opened: Deferred[RedisStore] = Deferred()

        def failed(reason: Failure) -> None:
            if not opened.called:
                message = reason.getErrorMessage().removeprefix("Redis error: ")
                self._stopConnecting()
                opened.errback(RedisStoreError(f"cannot reach Redis at {self.address.describe()}: {message}"))

        endpoint = _ReportingEndpoint(self._endpoint(), failed)
        self._factory = self._makeFactory()
        self._factory.startConnecting(endpoint)
        self._factory.deferred.addCallbacks(lambda _: None if opened.called else self._start(opened), failed)
        return opened

    def _start(self, opened: Deferred[RedisStore]) -> None:
        def started(reply: list) -> RedisStore:
            epoch, layout, self.retained = reply
            self.backlog = self.retained
            if layout > LAYOUT:
                raise RedisStoreError(
                    f"the queue at Redis {self.address.describe()} was written by a newer wsqueue (layout {layout})"
                )
            self.epoch = epoch
            return self

        def refused(reason: Failure) -> None:
            if not opened.called:
                self._stopConnecting()
                opened.errback(reason)

        d = self._run("open", [uuid.uuid4().hex, str(LAYOUT), str(self.historyKeep)])
        d.addCallback(started).addCallbacks(opened.callback, refused)

    def _connection(self) -> Any:
        """
        The live connection, with the scripts loaded on it; raise L{RedisStoreError}
        when there is none (Redis is gone, the store is being reconnected).
        """
        if self.closed:
            raise RedisStoreError(f"the store at Redis {self.address.describe()} is closed")
        for connection in self._factory.pool if self._factory is not None else ():
            if connection.connected:
                if connection is not self._loaded:
                    # Pipelined before the first command: Redis runs them in order.
                    for script in SCRIPTS.values():
                        connection.execute_command("SCRIPT", "LOAD", script.source).addErrback(self._loadFailed)
                    self._loaded = connection
                return connection
        raise RedisStoreError(f"Redis at {self.address.describe()} is unreachable (reconnecting)")

    def _loadFailed(self, reason: Failure) -> None:
        self.log.warn("cannot load the store's scripts into Redis: {error}", error=reason.getErrorMessage())

    def _failed(self, reason: Failure) -> Failure:
        if reason.check(RedisStoreError):
            return reason
        where = self.address.describe()
        if reason.check(txredisapi.ResponseError) and str(reason.value).startswith(QUEUE_GONE):
            self._queueGone()
            return Failure(RedisStoreError(f"the queue is gone from Redis at {where} (it restarted empty?); "
                                           "starting it again with a new epoch"))
        if reason.check(txredisapi.TimeoutError):
            error = RedisStoreError(f"Redis at {where} did not answer within {self._replyTimeout:g} s")
        elif reason.check(txredisapi.ConnectionError):
            error = RedisStoreError(f"lost the connection to Redis at {where}")
        else:
            error = RedisStoreError(f"Redis at {where}: {reason.getErrorMessage()}")
        return Failure(error)

    def _send(self, connection: Any, script: _Script, args: Sequence[Any]) -> Deferred:
        def missing(reason: Failure) -> Any:
            # Flushed by an operator since it was loaded: send it whole.
            if reason.check(txredisapi.ResponseError) and str(reason.value).startswith("NOSCRIPT"):
                return connection.execute_command("EVAL", script.source, 1, self._meta, self._prefix, *args)
            return reason

        d = connection.execute_command("EVALSHA", script.sha, 1, self._meta, self._prefix, *args)
        return d.addErrback(missing)

    def _run(self, name: str, args: Sequence[Any]) -> Deferred[Any]:
        """
        Run one of L{SCRIPTS}; fail with L{RedisStoreError} if Redis cannot.
        """
        try:
            d = self._send(self._connection(), SCRIPTS[name], args)
        except Exception:  # noqa: BLE001 -- reported to the caller like a failed reply
            return fail(self._failed(Failure()))
        return self._tracked(d.addErrback(self._failed))

    def _tracked(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        Remember C{d} until it fires, so that L{close} lets it finish.
        """
        finished: Deferred[None] = Deferred()
        self._inFlight.add(finished)

        def done(result: object) -> object:
            self._inFlight.discard(finished)
            finished.callback(None)
            return result

        return d.addBoth(done)

    def _queueGone(self) -> None:
        """
        Redis no longer has the queue: create it again (once, whichever operation
        noticed first), with a new epoch, so that consumers start counting offsets
        over instead of skipping the new entries as ones they have seen.
        """
        if self._reopening:
            return
        self._reopening = True
        self.log.error("the queue is gone from Redis at {where} (it restarted without its data, or a replica "
                       "without it was promoted): what it held is lost; starting again with a new epoch",
                       where=self.address.describe())

        def reopened(reply: list) -> None:
            self.epoch, _, self.retained = reply
            self.backlog = self.retained

        d = self._run("open", [uuid.uuid4().hex, str(LAYOUT), str(self.historyKeep)]).addCallback(reopened)
        d.addErrback(lambda failure: self.log.error("opening the queue again failed: {error}",
                                                    error=failure.getErrorMessage()))
        d.addBoth(lambda _: setattr(self, "_reopening", False))

    def _counted(self, reply: list) -> list:
        """
        Keep the stream length that every script's reply starts with; return the rest.
        """
        self.retained, self.backlog, self.retainedBytes = reply[0]
        return reply[1:]

    # IMessageStore

    def append(
        self, messages: Sequence[tuple[str, str]], producer: str | None = None, seqs: Sequence[int] | None = None
    ) -> Deferred[list[int | None]]:
        check = producer is not None and bool(seqs)
        items = [
            [seqs[number] if check and seqs else 0, topic, content] for number, (topic, content) in enumerate(messages)
        ]
        args: list[Any] = [
            _number(self._now()), "1" if check else "0", producer or "", MAX_PRODUCERS_REMEMBERED, self._channel,
            json.dumps(items, ensure_ascii=False, separators=(",", ":")), "0" if self._minReplicas else "1",
        ]
        try:
            connection = self._connection()
            d = self._send(connection, SCRIPTS["append"], args)
            if self._minReplicas:
                d = self._waitForReplicas(connection, d)
        except Exception:  # noqa: BLE001 -- reported to the caller like a failed reply
            return fail(self._failed(Failure()))
        d = self._tracked(d.addErrback(self._failed)).addCallback(self._counted)
        return d.addCallback(lambda reply: [offset or None for offset in json.loads(reply[0])])

    def _waitForReplicas(self, connection: Any, appended: Deferred) -> Deferred:
        """
        Send C{WAIT} right behind the append (no round trip in between) and fail the
        append if fewer than C{minReplicas} replicas confirm it in time.
        """
        timeout = int(self._replicaTimeout * 1000)
        waited = connection.execute_command("WAIT", self._minReplicas, timeout)

        def check(results: list) -> Any:
            reply, replicas = results
            if replicas < self._minReplicas:
                self.retained, self.backlog, self.retainedBytes = reply[0]
                raise RedisStoreError(
                    f"only {replicas} of {self._minReplicas} Redis replicas confirmed an append within "
                    f"{self._replicaTimeout:g} s (it is stored on the master)"
                )
            # Everything up to the offsets allocated so far has reached a replica
            # (replication keeps order): let it be handed out, then answer.
            return self._run("confirm", [reply[2], self._channel]).addCallback(lambda _: reply)

        def firstFailure(failure: Failure) -> Failure:
            return cast(FirstError, failure.value).subFailure

        both = gatherResults([appended, waited], consumeErrors=True)
        return both.addErrback(firstFailure).addCallback(check)

    @property
    def confirmsAppends(self) -> bool:
        """
        Whether new entries are handed out only once a replica has them (with
        C{minReplicas}): an append is then announced after its C{WAIT}, not at once.
        """
        return self._minReplicas > 0

    def readGroup(self, group: str, consumer: str, count: int, maxDeliver: int | None = None) -> Deferred[list[Entry]]:
        args = [
            _number(self._now()), group, consumer, count, "" if maxDeliver is None else maxDeliver,
            "1" if self._minReplicas else "0",
        ]
        return self._run("readGroup", args).addCallback(self._counted).addCallback(self._entries)

    @staticmethod
    def _entries(reply: list) -> list[Entry]:
        flat = json.loads(reply[0])
        return [Entry(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat), 4)]

    def ack(self, group: str, offsets: Sequence[int]) -> Deferred[int]:
        d = self._run("ack", [_number(self._now()), group, *offsets])
        return d.addCallback(self._counted).addCallback(lambda reply: reply[0])

    def pending(self, group: str) -> Deferred[list[PendingEntry]]:
        def listed(flat: list) -> list[PendingEntry]:
            entries = []
            for offset, state in zip(flat[::2], flat[1::2]):
                deliveries, _, consumer = state.split(" ", 2)
                if consumer:
                    entries.append(PendingEntry(int(offset), consumer, int(deliveries)))
            return sorted(entries, key=lambda entry: entry.offset)

        return self._command("HGETALL", f"{self._prefix}gp:{group}").addCallback(listed)

    def _command(self, *args: Any) -> Deferred[Any]:
        try:
            d = self._connection().execute_command(*args)
        except Exception:  # noqa: BLE001 -- reported to the caller like a failed reply
            return fail(self._failed(Failure()))
        return self._tracked(d.addErrback(self._failed))

    def release(self, group: str, consumer: str) -> Deferred[int]:
        d = self._run("release", [_number(self._now()), group, consumer])
        return d.addCallback(self._counted).addCallback(lambda reply: reply[0])

    def releaseExpired(self, ackWait: float) -> Deferred[list[tuple[str, int]]]:
        d = self._run("releaseExpired", [_number(self._now()), _number(self._now() - ackWait)])
        return d.addCallback(self._counted).addCallback(lambda flat: list(zip(flat[::2], flat[1::2])))

    def groupLags(self) -> Deferred[dict[str, int]]:
        def lags(replies: list) -> dict[str, int]:
            flat, (first, last) = replies
            first, last = int(first or 1), int(last or 0)
            return {name: max(0, last + 1 - max(int(position), first)) for name, position in zip(flat[::2], flat[1::2])}

        d = gatherResults([
            self._command("HGETALL", self._prefix + "groups"), self._command("HMGET", self._meta, "first", "last"),
        ], consumeErrors=True)
        return d.addCallback(lags)

    def history(self, pattern: str, after: int, limit: int) -> Deferred[History]:
        # A pattern's topics from the list of indexed topics first (the index's
        # equivalent of SQLite's range of topics), then their offsets from the index.
        def read(topics: list[str]) -> Deferred[History]:
            d = self._run("history", [str(after), str(limit), *topics])
            return d.addCallback(self._counted).addCallback(found)

        def found(reply: list) -> History:
            epoch, first, last, indexedFrom, rows, count = reply
            entries = [Entry(offset, topic, content) for offset, topic, content in json.loads(rows)]
            nothingAfter = after >= last
            complete = nothingAfter or (after + 1 >= max(first, indexedFrom) and count <= limit)
            # An entry the index named but the stream no longer held: a gap, never whole.
            complete = complete and len(entries) == count
            return History(epoch, last, entries, complete)

        if not isPattern(pattern):
            return read([pattern])
        listed = self._command("SMEMBERS", self._prefix + "topics")
        return listed.addCallback(lambda topics: read([topic for topic in topics if matches(pattern, topic)]))

    def deadLetters(self, group: str | None = None) -> Deferred[list[DeadLetter]]:
        def decoded(rows: list) -> list[DeadLetter]:
            letters = []
            for row in rows:
                name, offset, topic, content, deliveries, at = json.loads(row)
                if group is None or name == group:
                    letters.append(DeadLetter(name, offset, topic, content, deliveries, float(at)))
            return letters

        return self._command("LRANGE", self._prefix + "dead", 0, -1).addCallback(decoded)

    def applyRetention(
        self, maxMessages: int | None, maxBytes: int | None, maxAge: float | None
    ) -> Deferred[dict[str, int]]:
        args = [_number(self._now()), _optional(maxMessages), _optional(maxBytes), _optional(maxAge)]
        return self._run("applyRetention", args).addCallback(self._counted).addCallback(self._lost)

    @staticmethod
    def _lost(flat: list) -> dict[str, int]:
        return dict(zip(flat[::2], flat[1::2]))

    def trimGroupBacklog(self, maxBacklog: int, active: set[str]) -> Deferred[dict[str, int]]:
        """
        As the interface says, with C{active} the groups with a consumer connected
        to I{any} msgqueue daemon sharing the queue: each says which it serves (see
        L{PRESENCE_TTL}), so that a group read through another daemon is not taken
        for an absent one.
        """
        d = self._run("trimGroupBacklog", [maxBacklog, *self._presence(active)])
        return d.addCallback(self._counted).addCallback(self._lost)

    def expireGroups(self, idle: float, active: set[str]) -> Deferred[list[str]]:
        """
        As the interface says, with C{active} as in L{trimGroupBacklog}.
        """
        d = self._run("expireGroups", [_number(self._now() - idle), *self._presence(active)])
        return d.addCallback(self._counted)

    def _presence(self, active: set[str]) -> list[Any]:
        return [self._daemonId, _number(self._now()), _number(PRESENCE_TTL), *sorted(active)]

    def _stopConnecting(self) -> None:
        """
        Drop the connection being made (a failed L{open}), so that nothing retries
        behind the caller's back; L{open} may be called again.
        """
        for factory in (self._factory, self._sentinel):
            if factory is not None:
                maybeDeferred(factory.disconnect).addErrback(lambda _: None)
        self._factory = self._sentinel = self._loaded = None

    def close(self) -> Deferred[None]:
        """
        Let the operations under way finish (each is bounded by the reply timeout:
        a msgqueue stopping gives back what its departing consumers held), then stop
        reconnecting and close the connections; fire once they are closed.  Redis
        keeps everything: a clean close has nothing more to write.
        """
        if self._closing is None:
            self.closed = True

            def disconnect(_: object) -> Deferred[Any]:
                closing = [factory.disconnect() for factory in (self._factory, self._subscriber) if factory is not None]
                if self._sentinel is not None:
                    closing.append(self._sentinel.disconnect())
                return gatherResults(closing, consumeErrors=True)

            underWay = gatherResults(list(self._inFlight))
            self._closing = underWay.addCallback(disconnect).addBoth(lambda _: None)
        done: Deferred[None] = Deferred()
        self._closing.addCallback(lambda _: done.callback(None))
        return done

    # New entries, from any daemon

    def onNewEntries(self, listener: Callable[[int | None], object]) -> None:
        """
        Call C{listener(offset)} whenever any daemon sharing the queue has appended
        entries up to C{offset} (this one included), so that waiting consumers are
        served without polling; and C{listener(None)} each time the notification
        channel is (re)connected, as entries may have come while it was down.
        Notifications go over a connection of their own (Redis pub/sub).
        """
        self._listeners.append(listener)
        if self._subscriber is None and not self.closed:
            self._subscriber = self._makeFactory(subscriber=True)
            self._subscriber.startConnecting(self._endpoint())

    def _notify(self, offset: int | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(offset)
            except Exception:  # noqa: BLE001 -- logged; the other listeners are still told
                self.log.failure("a new-entries listener failed")


class _Subscriber(txredisapi.SubscriberProtocol):
    """
    The connection that listens for the append script's notifications.
    """

    def connectionMade(self) -> Deferred:
        d = super().connectionMade()
        # After AUTH and SELECT: subscribe, then say that entries may have been missed.
        self.whenConnected().addCallback(lambda _: self.subscribe(self.factory.channel)).addCallbacks(
            lambda _: self.factory.notify(None), lambda _: None
        )
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        try:
            offset = int(message)
        except (TypeError, ValueError):
            return
        self.factory.notify(offset)


class _SubscriberFactory(txredisapi.SubscriberFactory):
    protocol = _Subscriber

    def __init__(self, notify: Callable[[int | None], None], channel: str) -> None:
        super().__init__(isLazy=True)
        self.notify = notify
        self.channel = channel
        self.convertNumbers = False
