"""Who the client is, as far as a request can tell: its IP address and user agent.

:func:`client_device` turns what an integration has of a request (the peer's address and
the headers) into a :class:`~lembro.lifetimes.Device`, recorded with a session when it is
created or regenerated (a user's "your devices" list).

The IP is the peer's, the address the TCP connection came from, unless the peer is one
of the app's ``trusted_proxies``: then it is the right-most address of
``X-Forwarded-For`` that is not a trusted proxy. Each proxy appends the address it saw
to the right, so the addresses left of the first untrusted one (walking from the right)
are whatever the client chose to send, and are never taken. With no trusted proxies
the header is ignored entirely: anyone can send it.

Nothing here raises on a client's bytes: an address that does not parse gives
``ip=None``, and a user agent that is not UTF-8 keeps its characters that are.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeAlias

from .errors import InvalidOption
from .lifetimes import MAX_USER_AGENT, Device

__all__ = ["MAX_USER_AGENT", "Headers", "TrustedProxies", "client_device", "trusted_networks"]

#: An ``X-Forwarded-For`` longer than this (characters) names no client (a proxy chain
#: is a few addresses; only a client's own padding makes it long).
_MAX_FORWARDED = 2048

_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The app's trusted proxies: networks as strings (``"10.0.0.0/8"``, ``"127.0.0.1"``) or
#: ``ipaddress`` network objects.
TrustedProxies: TypeAlias = Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network]

#: A request's headers, in one of the shapes the integrations have: a mapping with
#: lower-case or canonical names (``"user-agent"``, ``"User-Agent"``), a WSGI environ or
#: Django's ``request.META`` (``"HTTP_USER_AGENT"``), or the ASGI list of
#: ``(name, value)`` byte pairs.
Headers: TypeAlias = Mapping[str, Any] | Iterable[tuple[bytes, bytes]]

_FORWARDED_NAMES = ("x-forwarded-for", "X-Forwarded-For", "HTTP_X_FORWARDED_FOR")
_AGENT_NAMES = ("user-agent", "User-Agent")


def trusted_networks(trusted_proxies: TrustedProxies) -> tuple[_Network, ...]:
    """``trusted_proxies`` parsed, for an integration to check its setting once at start.

    Raises ``InvalidOption`` for anything that is not an IP network (a single address is a
    network of one; host bits set, as in ``"10.1.2.3/8"``, are refused: say what you mean).
    """
    if isinstance(trusted_proxies, (str, bytes)):
        raise InvalidOption(
            "trusted_proxies", trusted_proxies, "a sequence of networks, not one string"
        )
    try:
        return _parse(tuple(trusted_proxies))
    except TypeError as e:  # unhashable items: parse them without the cache
        raise InvalidOption("trusted_proxies", trusted_proxies, "a sequence of IP networks") from e


@lru_cache(maxsize=16)
def _parse(trusted: tuple[Any, ...]) -> tuple[_Network, ...]:
    networks = []
    for item in trusted:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(item)
            continue
        if not isinstance(item, str):
            raise InvalidOption("trusted_proxies", item, "an IP network such as '10.0.0.0/8'")
        try:
            networks.append(ipaddress.ip_network(item.strip()))
        except ValueError as e:
            raise InvalidOption(
                "trusted_proxies", item, "an IP network such as '10.0.0.0/8'"
            ) from e
    return tuple(networks)


def client_device(
    peer_ip: str | None,
    headers: Headers,
    *,
    trusted_proxies: TrustedProxies = (),
    truncate: bool = False,
) -> Device:
    """The client of a request, as a :class:`~lembro.lifetimes.Device`.

    ``peer_ip``: the address the connection came from (``None`` when the server gave
    none, as on a Unix socket). ``headers``: see :data:`Headers`. ``trusted_proxies``:
    the networks of the app's reverse proxies; when the peer is in one, the IP is the
    right-most ``X-Forwarded-For`` address outside them (the left-most one when every
    address is a trusted proxy; ``None`` when the first one met that is not trusted does
    not parse). ``truncate``: keep only the /24 of an IPv4 address and the /48 of an IPv6
    one (``"203.0.113.0"``, ``"2001:db8:1::"``), for apps that must not keep whole
    addresses. The user agent is cut to :data:`MAX_USER_AGENT` characters, control
    characters dropped.

    Never raises on what the client sent; raises ``InvalidOption`` for a bad
    ``trusted_proxies`` (check it at start with :func:`trusted_networks`).
    """
    forwarded, agent = _find(headers)
    address = _address(peer_ip)
    if address is not None and forwarded is not None and trusted_proxies:
        networks = trusted_networks(trusted_proxies)
        if _trusted(address, networks):
            address = _from_forwarded(forwarded, networks)
    ip = None
    if address is not None:
        if truncate:
            prefix = 24 if address.version == 4 else 48
            address = ipaddress.ip_network((address, prefix), strict=False).network_address
        ip = str(address)
    return Device(ip=ip, user_agent=_user_agent(agent))


def _find(headers: Headers) -> tuple[str | bytes | None, str | bytes | None]:
    """``X-Forwarded-For`` (every one the request carries, joined) and ``User-Agent``."""
    agent: str | bytes | None = None
    if isinstance(headers, Mapping):
        agent = headers.get("HTTP_USER_AGENT")
        if isinstance(agent, str):
            # WSGI hands header bytes over as latin-1 characters: the UTF-8 they were.
            with contextlib.suppress(UnicodeEncodeError):
                agent = agent.encode("latin-1")
        else:
            agent = _lookup(headers, _AGENT_NAMES)
        return _lookup(headers, _FORWARDED_NAMES), agent
    forwarded: list[bytes] = []
    try:
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"x-forwarded-for":
                forwarded.append(value)
            elif lowered == b"user-agent" and agent is None:
                agent = value
    except (TypeError, ValueError, AttributeError):  # not pairs of bytes: nothing known
        return None, None
    return (b",".join(forwarded) if forwarded else None), agent


def _lookup(headers: Mapping[str, Any], names: tuple[str, ...]) -> str | bytes | None:
    for name in names:
        value = headers.get(name)
        if isinstance(value, (str, bytes)):
            return value
    return None


def _address(text: str | bytes | None) -> _Address | None:
    """An IP address, from a peer or one ``X-Forwarded-For`` entry; ``None`` if it is not
    one. A port (``"203.0.113.7:5678"``, ``"[2001:db8::1]:443"``) is dropped, and an
    IPv4 address in IPv6 (``"::ffff:203.0.113.7"``) is the IPv4 one."""
    if text is None:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: _Address, networks: Sequence[_Network]) -> bool:
    return any(address in network for network in networks)


def _from_forwarded(forwarded: str | bytes, networks: Sequence[_Network]) -> _Address | None:
    """The right-most address of ``X-Forwarded-For`` outside ``networks`` (see
    :func:`client_device`)."""
    if len(forwarded) > _MAX_FORWARDED:
        return None
    if isinstance(forwarded, bytes):
        try:
            forwarded = forwarded.decode("ascii")
        except UnicodeDecodeError:
            return None
    left_most: _Address | None = None
    for entry in reversed(forwarded.split(",")):
        if not entry.strip():  # "a, , b" or a trailing comma: no hop there
            continue
        address = _address(entry)
        if address is None or not _trusted(address, networks):
            return address
        left_most = address
    return left_most


def _user_agent(agent: str | bytes | None) -> str | None:
    if agent is None:
        return None
    if isinstance(agent, bytes):
        agent = agent[: MAX_USER_AGENT * 4].decode("utf-8", "replace")
    agent = agent[:MAX_USER_AGENT]
    if not agent.isprintable():  # a log line or a page must not get a client's controls
        agent = "".join(c if c.isprintable() else " " for c in agent)
    agent = agent.strip()
    return agent or None
