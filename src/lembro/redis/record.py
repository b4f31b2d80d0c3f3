"""A session's Redis value: a small header, then the serialized session; and the Lua
scripts that read and write it in one step each (issue 29).

The header holds what a session is beyond its data, in text a script can match:

    b"\\xc1L1 " created renewed last_seen absolute_end ip_len ua_len b"\\n" ip ua

(times in ms since the epoch on Redis's clock, ``TIME``; ``absolute_end`` 0 when the store
has no ``absolute_ttl``; each length the UTF-8 bytes of what follows, -1 for none), then
the serializer's bytes. ``0xc1`` is a byte msgpack never uses and UTF-8 never holds, and
pickle starts with ``0x80``, so no value written before the header existed starts with
it: such a value reads as a session first seen now, and ``load`` gives it a header.

An id that a rename with ``grace`` replaced holds an *alias* in its own key until the new
id ends: ``b"\\xc1L1>" grace_end b" " sign_in b" " new_id`` (``sign_in`` 1 for a rename
that started a new sign-in, else 0); read before ``grace_end`` it answers as the new id,
read after it it is a stolen cookie. An alias reached through another one is followed
only if it is no sign-in's: a sign-in forgets the ids its session had before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone

__all__ = [
    "ALIAS",
    "HEADER",
    "Alias",
    "Header",
    "alias_value",
    "as_datetime",
    "device_args",
    "split",
]

HEADER = b"\xc1L1 "
ALIAS = b"\xc1L1>"
_HEADER = re.compile(rb"\xc1L1 (\d+) (\d+) (\d+) (\d+) (-?\d+) (-?\d+)\n")
_ALIAS = re.compile(rb"\xc1L1>(\d+) ([01]) (.+)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Header:
    """A session value's header; times in ms since the epoch (Redis's clock)."""

    created: int
    renewed: int
    last_seen: int
    absolute_end: int  # 0: no absolute end
    ip: str | None
    user_agent: str | None

    def seen(self, now_ms: int) -> Header:
        return replace(self, last_seen=now_ms)


@dataclass(frozen=True, slots=True)
class Alias:
    """An id replaced by ``target``: it answers as ``target`` until ``grace_end`` (ms);
    ``sign_in``: the rename started a new sign-in."""

    grace_end: int
    target: str
    sign_in: bool = False


def alias_value(grace_end: int, target: str, sign_in: bool = False) -> bytes:
    """An alias as the store writes it."""
    return ALIAS + f"{grace_end} {int(sign_in)} {target}".encode()


def _text(raw: bytes, length: int) -> str | None:
    return None if length < 0 else raw.decode(errors="replace")


def split(value: bytes) -> tuple[Header | None, bytes] | Alias:
    """A stored value as its header (``None`` for a value written without one) and the
    serializer's bytes, or the alias it is."""
    if not value.startswith(b"\xc1L1"):
        return None, value
    if value.startswith(ALIAS):
        alias = _ALIAS.fullmatch(value)
        if alias is None:
            return None, value
        return Alias(int(alias[1]), alias[3].decode(errors="replace"), alias[2] == b"1")
    found = _HEADER.match(value)
    if found is None:
        return None, value
    c, r, s, a, il, ul = (int(x) for x in found.groups())
    at = found.end()
    ip_raw = value[at : at + max(il, 0)]
    ua_raw = value[at + max(il, 0) : at + max(il, 0) + max(ul, 0)]
    header = Header(c, r, s, a, _text(ip_raw, il), _text(ua_raw, ul))
    return header, value[at + max(il, 0) + max(ul, 0) :]


def device_args(ip: str | None, user_agent: str | None) -> tuple[str, bytes, str, bytes]:
    """A device as a script's arguments: each field's length (-1: none) and bytes."""
    ip_raw = b"" if ip is None else ip.encode(errors="replace")
    ua_raw = b"" if user_agent is None else user_agent.encode(errors="replace")
    return (
        "-1" if ip is None else str(len(ip_raw)),
        ip_raw,
        "-1" if user_agent is None else str(len(ua_raw)),
        ua_raw,
    )


def as_datetime(ms: int) -> datetime:
    """ms since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


# The functions every script below starts with. ``parse`` gives a value's header as a
# table (``data``: where the serialized session starts), or nil for a value without one;
# ``stamp`` writes one back; ``cap`` is the ms a session may live from ``now``: ``ttl``,
# never past its absolute end (0 or less: it is over).
PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ms(n)
  return string.format('%d', n)
end
local function is_alias(v)
  return string.sub(v, 1, 4) == '\193L1>'
end
local function parse(v)
  local c, r, s, a, il, ul, at = string.match(
    v, '^\193L1 (%d+) (%d+) (%d+) (%d+) (%-?%d+) (%-?%d+)\n()')
  if not c then
    return nil
  end
  local ipn, uan = math.max(tonumber(il), 0), math.max(tonumber(ul), 0)
  return {c = tonumber(c), r = tonumber(r), s = tonumber(s), a = tonumber(a),
          il = il, ul = ul, ip = string.sub(v, at, at + ipn - 1),
          ua = string.sub(v, at + ipn, at + ipn + uan - 1), data = at + ipn + uan}
end
local function fresh(now, absolute)
  local a = 0
  if absolute > 0 then
    a = now + absolute
  end
  return {c = now, r = now, s = now, a = a, il = '-1', ul = '-1', ip = '', ua = ''}
end
local function stamp(h)
  return '\193L1 ' .. ms(h.c) .. ' ' .. ms(h.r) .. ' ' .. ms(h.s) .. ' ' .. ms(h.a)
    .. ' ' .. h.il .. ' ' .. h.ul .. '\n' .. h.ip .. h.ua
end
local function cap(h, ttl, now)
  if h and h.a > 0 then
    return math.min(ttl, h.a - now)
  end
  return ttl
end
local function over(h, now)
  return h ~= nil and h.a > 0 and h.a <= now
end
local function kind_of(key)
  return redis.call('TYPE', key)['ok']
end
"""

# set and replace, on KEYS[1]: ARGV[1] the serialized session, ARGV[2] the idle lifetime
# (ms), ARGV[3] 'XX' for a replace, ARGV[4] the absolute lifetime (ms, 0: none), ARGV[5..8]
# the device (lengths and bytes) kept when the session is created here. A session that
# is there keeps its header (created, device, absolute end). -1: another app's key; 0:
# not written (a replace of no session, or of one past its absolute end); 1: written over
# a session; 2: written as a new one; {alias, now}: KEYS[1] is an alias, left as it was.
PUT = (
    PRELUDE
    + r"""
local kind = kind_of(KEYS[1])
if kind ~= 'none' and kind ~= 'string' then
  return -1
end
local now = now_ms()
local old = false
if kind == 'string' then
  old = redis.call('GET', KEYS[1])
end
local h = nil
if old then
  if is_alias(old) then
    return {old, ms(now)}
  end
  h = parse(old)
  if over(h, now) then
    old, h = false, nil
  end
end
if not old and ARGV[3] == 'XX' then
  return 0
end
if h then
  h.s = now
else
  h = fresh(now, tonumber(ARGV[4]))
  h.il, h.ip, h.ul, h.ua = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
end
redis.call('SET', KEYS[1], stamp(h) .. ARGV[1], 'PX', cap(h, tonumber(ARGV[2]), now))
if old then
  return 1
end
return 2
"""
)

# renew, and a touch that must read the session: KEYS[1]'s value, its lifetime set to
# ARGV[1] ms (never past its absolute end), and Redis's time: {value, now}; nil when
# absent or over; -1 for another app's key. An alias is returned as it is.
GETEX = (
    PRELUDE
    + r"""
local kind = kind_of(KEYS[1])
if kind == 'none' then
  return nil
elseif kind ~= 'string' then
  return -1
end
local now = now_ms()
local v = redis.call('GET', KEYS[1])
if is_alias(v) then
  return {v, ms(now)}
end
local h = parse(v)
local px = cap(h, tonumber(ARGV[1]), now)
if px <= 0 then
  redis.call('DEL', KEYS[1])
  return nil
end
redis.call('PEXPIRE', KEYS[1], px)
return {v, ms(now)}
"""
)

# touch: KEYS[1]'s lifetime set to ARGV[1] ms, never past its absolute end: 1; 0 when
# absent or over; -1 for another app's key; {alias, now} for an alias, left as it was.
TOUCH = (
    PRELUDE
    + r"""
local kind = kind_of(KEYS[1])
if kind == 'none' then
  return 0
elseif kind ~= 'string' then
  return -1
end
local now = now_ms()
local v = redis.call('GET', KEYS[1])
if is_alias(v) then
  return {v, ms(now)}
end
local px = cap(parse(v), tonumber(ARGV[1]), now)
if px <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
return redis.call('PEXPIRE', KEYS[1], px)
"""
)

# load: KEYS[1]'s value, Redis's time and the ms it has left, {value, now, pttl}, with
# last_seen written (KEEPTTL) when the stored one is ARGV[1] ms old or more; nil when
# absent or over; -1 for another app's key. A value without a header, or an alias, is
# returned as it is.
LOAD = (
    PRELUDE
    + r"""
local kind = kind_of(KEYS[1])
if kind == 'none' then
  return nil
elseif kind ~= 'string' then
  return -1
end
local now = now_ms()
local v = redis.call('GET', KEYS[1])
local h = parse(v)
if h then
  if over(h, now) then
    redis.call('DEL', KEYS[1])
    return nil
  end
  if now - h.s >= tonumber(ARGV[1]) then
    h.s = now
    v = stamp(h) .. string.sub(v, h.data)
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
  end
end
return {v, ms(now), redis.call('PTTL', KEYS[1])}
"""
)

# A value written without a header, given one (created now, absolute end ARGV[2] ms from
# now, 0: none) if KEYS[1] still holds it (SHA-1 ARGV[1]); its lifetime capped. The new
# value, Redis's time and the ms it has left, or nil when it changed meanwhile.
STAMP = (
    PRELUDE
    + r"""
if kind_of(KEYS[1]) ~= 'string' then
  return nil
end
local v = redis.call('GET', KEYS[1])
if redis.sha1hex(v) ~= ARGV[1] or parse(v) or is_alias(v) then
  return nil
end
local now = now_ms()
local h = fresh(now, tonumber(ARGV[2]))
v = stamp(h) .. v
local left = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[1], v, 'KEEPTTL')
if left > 0 then
  left = cap(h, left, now)
  redis.call('PEXPIRE', KEYS[1], left)
end
return {v, ms(now), left}
"""
)

# An update's write: ARGV[2] (the serialized session) under KEYS[1]'s header, for ARGV[3]
# ms (never past the absolute end), only if KEYS[1] still holds the value whose SHA-1 is
# ARGV[1]: 1 when written; 0 when KEYS[1] holds no session (destroyed meanwhile: never
# recreated; or past its absolute end); -1 when it is another app's key; -2 when another
# write landed since the read. A value without a header gets one (absolute ARGV[4] ms).
SWAP = (
    PRELUDE
    + r"""
local kind = kind_of(KEYS[1])
if kind == 'none' then
  return 0
elseif kind ~= 'string' then
  return -1
end
local v = redis.call('GET', KEYS[1])
if redis.sha1hex(v) ~= ARGV[1] then
  return -2
end
local now = now_ms()
local h = parse(v)
if over(h, now) then
  redis.call('DEL', KEYS[1])
  return 0
end
if not h then
  h = fresh(now, tonumber(ARGV[4]))
end
h.s = now
redis.call('SET', KEYS[1], stamp(h) .. ARGV[2], 'PX', cap(h, tonumber(ARGV[3]), now))
return 1
"""
)

# The new session's header of a rename, from the old one's ``old`` (nil: none) and the
# rename's arguments at ARGV[i], ARGV[i+1], ...: reset ('1': a new absolute lifetime),
# the absolute lifetime (ms), whether a device is given, and its four fields.
_NEXT = r"""
local function next_header(old, now, i)
  local h
  if ARGV[i] == '1' or not old then
    h = fresh(now, tonumber(ARGV[i + 1]))
  else
    h = {c = old.c, r = now, s = now, a = old.a}
  end
  if ARGV[i + 2] == '1' then
    h.il, h.ip, h.ul, h.ua = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  elseif old then
    h.il, h.ip, h.ul, h.ua = old.il, old.ip, old.ul, old.ua
  else
    h.il, h.ip, h.ul, h.ua = '-1', '', '-1', ''
  end
  return h
end
-- What the old id holds once replaced: an alias of ``new`` for ``grace`` ms, kept as
-- long as the new session can live (at least the grace).
local function retire(key, new, grace, px, h, now, sign_in)
  if grace <= 0 then
    redis.call('DEL', key)
    return
  end
  local keep = px
  if h.a > 0 then
    keep = h.a - now
  end
  keep = math.max(keep, grace)
  redis.call('SET', key, '\193L1>' .. ms(now + grace) .. ' ' .. sign_in .. ' ' .. new, 'PX', keep)
end
"""
NEXT = _NEXT


# On a cluster, a rename's first write: the new session under KEYS[1] (ARGV[2], for
# ARGV[3] ms at most), its header made from the old one's (ARGV[1], '' for none) and the
# rename's arguments from ARGV[4] (see next_header). -1: another app's key; 0: the old
# session is past its absolute end; else {ms it lives, Redis's time, its absolute end}.
PUT_NEW = (
    PRELUDE
    + NEXT
    + r"""
local kind = kind_of(KEYS[1])
if kind ~= 'none' and kind ~= 'string' then
  return -1
end
local now = now_ms()
local old = nil
if ARGV[1] ~= '' then
  old = parse(ARGV[1])
end
if over(old, now) then
  return 0
end
local h = next_header(old, now, 4)
local px = cap(h, tonumber(ARGV[3]), now)
redis.call('SET', KEYS[1], stamp(h) .. ARGV[2], 'PX', px)
return {px, ms(now), ms(h.a)}
"""
)

# On a cluster, a rename's last write: the old session KEYS[1] deleted, or made an alias
# of ARGV[2] for ARGV[3] ms (see retire; ARGV[4] the new session's lifetime in ms, ARGV[5]
# its absolute end, ARGV[6] '1' for a sign-in), only if it still holds a session (with
# ARGV[1], the value whose SHA-1 that is): 1; 0 when it holds none (a logout won); -1
# another app's key; -2 another write landed since it was read.
RETIRE = (
    PRELUDE
    + NEXT
    + r"""
local kind = kind_of(KEYS[1])
if kind == 'none' then
  return 0
elseif kind ~= 'string' then
  return -1
end
local v = redis.call('GET', KEYS[1])
if is_alias(v) then
  return 0
end
if ARGV[1] ~= '' and redis.sha1hex(v) ~= ARGV[1] then
  return -2
end
local h = {a = tonumber(ARGV[5])}
retire(KEYS[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), h, now_ms(), ARGV[6])
return 1
"""
)

# destroy, one key at a time: KEYS[1] deleted when it holds a session: 1 (with ARGV[1]
# '1', {1, the value}); 0 when absent; -1 for another app's key; {2, alias} for an alias,
# left for the caller to drop once the session it names is ended.
DESTROY = (
    PRELUDE
    + r"""
local kind = kind_of(KEYS[1])
if kind == 'none' then
  -- a write still, so that a former primary, now a replica, refuses the logout
  return redis.call('DEL', KEYS[1])
elseif kind ~= 'string' then
  return -1
end
local v = redis.call('GET', KEYS[1])
if is_alias(v) then
  return {2, v}
end
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' then
  return {1, v}
end
return 1
"""
)

# KEYS[1] deleted if it still holds ARGV[1] (an alias, or a session an owner's call read):
# 1, else 0.
DROP = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# What KEYS[1] is, without its value: {0} absent, {-1} another type, {2} an alias, {1, ms
# left} a session (its PTTL: -1 when it has no expiry).
PEEK = r"""
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
  return {0}
elseif kind ~= 'string' then
  return {-1}
end
local head = redis.call('GETRANGE', KEYS[1], 0, 3)
if head == '\193L1>' then
  return {2}
elseif head == '\193L1 ' then
  return {1, redis.call('PTTL', KEYS[1])}
end
return {3, redis.call('PTTL', KEYS[1])}
"""

__all__ += [
    "DESTROY",
    "DROP",
    "GETEX",
    "LOAD",
    "NEXT",
    "PEEK",
    "PRELUDE",
    "PUT",
    "PUT_NEW",
    "RETIRE",
    "STAMP",
    "SWAP",
    "TOUCH",
]
