"""lembro.clients.client_device: which address and user agent a session records."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lembro.clients import MAX_USER_AGENT, client_device, trusted_networks
from lembro.errors import InvalidOption
from lembro.lifetimes import Device

PROXIES = ("127.0.0.1/32", "10.0.0.0/8")


def test_the_peer_is_the_client_when_no_proxy_is_trusted() -> None:
    device = client_device("203.0.113.7", {"user-agent": "Firefox"})
    assert device == Device(ip="203.0.113.7", user_agent="Firefox")


def test_a_forwarded_header_is_ignored_without_trusted_proxies() -> None:
    device = client_device("203.0.113.7", {"x-forwarded-for": "198.51.100.1"})
    assert device.ip == "203.0.113.7"


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored() -> None:
    headers = {"x-forwarded-for": "198.51.100.1"}
    device = client_device("203.0.113.7", headers, trusted_proxies=PROXIES)
    assert device.ip == "203.0.113.7"


def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() -> None:
    # The client sent "1.2.3.4" itself; its proxy chain appended the rest.
    headers = {"x-forwarded-for": "1.2.3.4, 198.51.100.9, 10.1.2.3"}
    device = client_device("127.0.0.1", headers, trusted_proxies=PROXIES)
    assert device.ip == "198.51.100.9"


def test_a_spoofed_left_part_of_the_header_is_never_taken() -> None:
    headers = {"x-forwarded-for": "10.9.9.9, 198.51.100.9"}
    device = client_device("10.0.0.1", headers, trusted_proxies=PROXIES)
    assert device.ip == "198.51.100.9"


def test_when_every_hop_is_trusted_the_left_most_one_is_the_client() -> None:
    headers = {"x-forwarded-for": "10.0.0.5, 10.0.0.6"}
    assert client_device("127.0.0.1", headers, trusted_proxies=PROXIES).ip == "10.0.0.5"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_device("127.0.0.1", {}, trusted_proxies=PROXIES).ip == "127.0.0.1"


def test_garbage_where_the_client_should_be_gives_no_ip() -> None:
    headers = {"x-forwarded-for": "198.51.100.9, unknown"}
    assert client_device("127.0.0.1", headers, trusted_proxies=PROXIES).ip is None


def test_every_forwarded_header_counts_in_order_in_asgi_headers() -> None:
    # Two header lines are one list (RFC 9110); the proxy's line comes last.
    headers = [
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"X-Forwarded-For", b"198.51.100.9"),
        (b"user-agent", b"curl/8"),
    ]
    device = client_device("127.0.0.1", headers, trusted_proxies=PROXIES)
    assert device == Device(ip="198.51.100.9", user_agent="curl/8")


def test_wsgi_environ_names_are_read() -> None:
    environ = {"HTTP_X_FORWARDED_FOR": "198.51.100.9", "HTTP_USER_AGENT": "Safari"}
    device = client_device("127.0.0.1", environ, trusted_proxies=PROXIES)
    assert device == Device(ip="198.51.100.9", user_agent="Safari")


def test_a_wsgi_user_agent_in_utf8_reads_as_written() -> None:
    environ = {"HTTP_USER_AGENT": "Navegador/1 (Conceição)".encode().decode("latin-1")}
    assert client_device(None, environ).user_agent == "Navegador/1 (Conceição)"


def test_bad_header_bytes_give_no_ip_and_never_raise() -> None:
    headers = [(b"x-forwarded-for", b"\xff\xfe1.2.3.4"), (b"user-agent", b"ok\xff")]
    device = client_device("127.0.0.1", headers, trusted_proxies=PROXIES)
    assert device.ip is None
    assert device.user_agent == "ok\ufffd"


@pytest.mark.parametrize(
    ("entry", "ip"),
    [
        ("198.51.100.9:5678", "198.51.100.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:198.51.100.9", "198.51.100.9"),
        ("[2001:db8::1", None),
    ],
)
def test_ports_and_mapped_addresses_are_read_as_the_address(entry: str, ip: str | None) -> None:
    headers = {"x-forwarded-for": entry}
    assert client_device("127.0.0.1", headers, trusted_proxies=PROXIES).ip == ip


def test_a_peer_that_is_not_an_address_gives_no_ip() -> None:
    assert client_device("testclient", {}).ip is None
    assert client_device(None, {}).ip is None


def test_an_absurdly_long_forwarded_header_names_no_one() -> None:
    headers = {"x-forwarded-for": "1.2.3.4, " * 1000 + "198.51.100.9"}
    assert client_device("127.0.0.1", headers, trusted_proxies=PROXIES).ip is None


def test_truncation_keeps_the_slash_24_of_ipv4_and_the_slash_48_of_ipv6() -> None:
    assert client_device("203.0.113.77", {}, truncate=True).ip == "203.0.113.0"
    assert client_device("2001:db8:1:2::5", {}, truncate=True).ip == "2001:db8:1::"


def test_truncation_applies_to_the_forwarded_address_too() -> None:
    headers = {"x-forwarded-for": "198.51.100.9"}
    device = client_device("127.0.0.1", headers, trusted_proxies=PROXIES, truncate=True)
    assert device.ip == "198.51.100.0"


def test_the_user_agent_is_cut_to_its_limit_and_loses_control_characters() -> None:
    assert client_device(None, {"user-agent": "x" * 2000}).user_agent == "x" * MAX_USER_AGENT
    assert client_device(None, {"user-agent": "a\r\nb\x00c"}).user_agent == "a  b c"
    assert client_device(None, {"user-agent": "   "}).user_agent is None


def test_trusted_proxies_accept_strings_and_network_objects() -> None:
    parsed = trusted_networks(["10.0.0.0/8", ipaddress.ip_network("::1/128"), "127.0.0.1"])
    assert [str(n) for n in parsed] == ["10.0.0.0/8", "::1/128", "127.0.0.1/32"]


@pytest.mark.parametrize("bad", ["10.0.0.0/8", ["10.1.2.3/8"], ["proxy"], [42], [["10.0.0.1"]]])
def test_bad_trusted_proxies_are_refused_clearly(bad: object) -> None:
    with pytest.raises(InvalidOption):
        trusted_networks(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        client_device("127.0.0.1", {"x-forwarded-for": "1.2.3.4"}, trusted_proxies=bad)  # type: ignore[arg-type]


@given(
    peer=st.one_of(st.none(), st.text(max_size=60)),
    forwarded=st.binary(max_size=200),
    agent=st.binary(max_size=700),
    truncate=st.booleans(),
)
def test_no_client_bytes_make_it_raise(
    peer: str | None, forwarded: bytes, agent: bytes, truncate: bool
) -> None:
    headers = [(b"x-forwarded-for", forwarded), (b"user-agent", agent)]
    device = client_device(peer, headers, trusted_proxies=("0.0.0.0/0", "::/0"), truncate=truncate)
    if device.ip is not None:
        ipaddress.ip_address(device.ip)
    assert device.user_agent is None or (
        len(device.user_agent) <= MAX_USER_AGENT and device.user_agent.isprintable()
    )
