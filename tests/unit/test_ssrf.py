"""The SSRF guard's rule, table-tested: an address passes when it, and every IPv4 address it
embeds, is global or allow-listed — whatever IPv6 form carries the IPv4 address."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from wabus.ssrf import (
    IPV4_COMPATIBLE,
    IPV4_TRANSLATED,
    NAT64_LOCAL,
    BlockedTarget,
    Network,
    address_allowed,
    check_address,
    check_url,
    embedded_ipv4,
    is_global,
)

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
GLOBAL_V4 = IPv4("8.8.8.8")

NOT_GLOBAL_V4 = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "0.0.0.0", "0.1.2.3", "192.0.0.8", "192.0.2.1",
    "192.88.99.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1", "233.252.0.1",
    "240.0.0.1", "255.255.255.255",
]  # fmt: skip
"""Loopback, private, metadata (169.254.169.254), shared, "this network", IETF, deprecated
6to4 anycast, documentation, benchmarking, multicast, reserved, broadcast."""
GLOBAL_V4S = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "192.0.0.9", "192.0.0.10", "9.9.9.9"]


def _v6(value: int) -> IPv6:
    return IPv6(value)


def mapped(v4: IPv4) -> IPv6:
    return _v6(0xFFFF << 32 | int(v4))


def compatible(v4: IPv4) -> IPv6:
    return _v6(int(v4))


def translated(v4: IPv4) -> IPv6:
    return _v6(0xFFFF << 48 | int(v4))


def six_to_four(v4: IPv4) -> IPv6:
    return _v6(0x2002 << 112 | int(v4) << 80 | 1)


def nat64(v4: IPv4) -> IPv6:
    return _v6(0x64FF9B << 96 | int(v4))


def nat64_local(v4: IPv4) -> IPv6:
    return _v6(0x64FF9B0001 << 80 | int(v4))


def teredo(server: IPv4, client: IPv4, port: int = 40000) -> IPv6:
    """RFC 4380: the client's port and address are stored inverted."""
    obscured = (~port & 0xFFFF) << 32 | (~int(client) & 0xFFFF_FFFF)
    return _v6(0x20010000 << 96 | int(server) << 64 | 0x8000 << 48 | obscured)


def teredo_server(v4: IPv4) -> IPv6:
    return teredo(v4, GLOBAL_V4)


def teredo_client(v4: IPv4) -> IPv6:
    return teredo(GLOBAL_V4, v4)


Form = Callable[[IPv4], IPv6]
ROUTED: dict[str, Form] = {
    "ipv4-mapped": mapped,
    "6to4": six_to_four,
    "nat64": nat64,
    "teredo-server": teredo_server,
    "teredo-client": teredo_client,
}
"""Forms that pass with a global IPv4 inside: the IPv4 address they reach decides."""
NOT_GLOBAL_THEMSELVES: dict[str, tuple[Form, Network]] = {
    "ipv4-compatible": (compatible, IPV4_COMPATIBLE),
    "ipv4-translated": (translated, IPV4_TRANSLATED),
    "nat64-local-use": (nat64_local, NAT64_LOCAL),
}
"""Forms refused by their own range; allow-listing that range leaves what they embed to judge."""
ALL_FORMS: dict[str, Form] = {
    **ROUTED,
    **{name: form for name, (form, _) in NOT_GLOBAL_THEMSELVES.items()},
}


def test_the_forms_spell_the_addresses_of_the_issue() -> None:
    """The builders make the very spellings the guard let through before."""
    loopback = IPv4("127.0.0.1")
    assert compatible(loopback) == IPv6("::127.0.0.1")
    assert six_to_four(loopback) == IPv6("2002:7f00:1::1")
    assert nat64(loopback) == IPv6("64:ff9b::7f00:1")
    assert translated(loopback) == IPv6("::ffff:0:7f00:1")
    assert mapped(loopback) == IPv6("::ffff:127.0.0.1")
    assert nat64_local(loopback) == IPv6("64:ff9b:1::7f00:1")
    assert teredo(IPv4("65.54.227.120"), IPv4("192.0.2.45")) == IPv6(
        "2001:0:4136:e378:8000:63bf:3fff:fdd2"
    )  # the example of RFC 4380


@pytest.mark.parametrize("form", ALL_FORMS.values(), ids=ALL_FORMS.keys())
@pytest.mark.parametrize("inner", NOT_GLOBAL_V4)
def test_every_form_with_a_non_global_ipv4_inside_is_refused(form: Form, inner: str) -> None:
    address = form(IPv4(inner))
    unspecified = address == IPv6("::")  # `::0.0.0.0`: refused as the unspecified address
    assert unspecified or IPv4(inner) in embedded_ipv4(address)
    assert not address_allowed(address)
    with pytest.raises(BlockedTarget) as blocked:
        check_address("target.example", str(address))
    assert unspecified or inner in blocked.value.reason
    with pytest.raises(BlockedTarget):
        check_url(f"http://[{address}]:8080/hook")
    control = form(GLOBAL_V4)  # the same form around a global address: refused only if not routed
    assert address_allowed(control) is (form in ROUTED.values())


@pytest.mark.parametrize("form", ROUTED.values(), ids=ROUTED.keys())
@pytest.mark.parametrize("inner", GLOBAL_V4S)
def test_routed_forms_with_a_global_ipv4_inside_pass(form: Form, inner: str) -> None:
    address = form(IPv4(inner))
    assert address_allowed(address)
    check_address("target.example", str(address))
    check_url(f"https://[{address}]/hook")
    assert not address_allowed(form(IPv4("169.254.169.254")))  # the control: metadata inside


@pytest.mark.parametrize(
    ("form", "own_range"), NOT_GLOBAL_THEMSELVES.values(), ids=NOT_GLOBAL_THEMSELVES.keys()
)
def test_forms_not_global_themselves_pass_only_with_their_range_and_a_global_ipv4(
    form: Form, own_range: Network
) -> None:
    """IPv4-compatible (deprecated), IPv4-translated and local-use NAT64 are never global; an
    operator who allow-lists their range still has every embedded IPv4 address checked."""
    allow = (own_range,)
    for inner in GLOBAL_V4S:
        assert not address_allowed(form(IPv4(inner)))
        assert address_allowed(form(IPv4(inner)), allow)
    for inner in NOT_GLOBAL_V4:
        assert not address_allowed(form(IPv4(inner)), allow)
    loopback = form(IPv4("127.0.0.1"))
    assert address_allowed(loopback, allow + LOOPBACK)  # both layers allow-listed


def test_teredo_checks_the_server_and_the_client() -> None:
    metadata = IPv4("169.254.169.254")
    assert embedded_ipv4(teredo(GLOBAL_V4, metadata)) == (GLOBAL_V4, metadata)
    assert not address_allowed(teredo(GLOBAL_V4, metadata))
    assert not address_allowed(teredo(metadata, GLOBAL_V4))
    assert address_allowed(teredo(GLOBAL_V4, IPv4("1.1.1.1")))


@pytest.mark.parametrize(
    "address",
    [
        *NOT_GLOBAL_V4,
        "::", "::1", "fe80::1", "fe80::1%eth0", "fec0::1", "fc00::1", "fd12:3456::1", "ff02::1",
        "ff0e::1", "100::1", "2001:db8::1", "3fff::1", "2001:2::1", "2001:10::1", "5f00::1",
        "4000::1", "::2", "::ffff:0", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
    ],
)  # fmt: skip
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address.split("%")[0]))
    with pytest.raises(BlockedTarget):
        check_address("target.example", address)


@pytest.mark.parametrize(
    "address",
    [
        *GLOBAL_V4S, "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888",
        "2606:4700:4700::1111", "2620:4f:8000::1", "2001:4:112::1", "2001:3::1",
        "::ffff:8.8.8.8",
    ],
)  # fmt: skip
def test_global_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))
    check_address("target.example", address)


def test_allow_list_opens_a_range_and_only_that_range() -> None:
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), LOOPBACK)
    assert not address_allowed(ipaddress.ip_address("::1"), LOOPBACK)


def test_an_allowed_ipv4_is_allowed_inside_forms_that_pass_by_themselves() -> None:
    """An embedded IPv4 address is judged as it is on its own: `127.0.0.0/8` opens it inside
    IPv4-mapped, 6to4, NAT64 and Teredo, not inside forms whose own range is not allow-listed."""
    loopback, private = IPv4("127.0.0.1"), IPv4("10.0.0.1")
    for form in ROUTED.values():
        assert not address_allowed(form(loopback))
        assert address_allowed(form(loopback), LOOPBACK)
        assert not address_allowed(form(private), LOOPBACK)
    for form, _ in NOT_GLOBAL_THEMSELVES.values():
        assert not address_allowed(form(loopback), LOOPBACK)


def test_the_unspecified_addresses_pass_no_allow_list() -> None:
    """`0.0.0.0` and `::` connect to this host: even "allow everything" does not open them."""
    everything = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    for address in ("0.0.0.0", "::", "::ffff:0.0.0.0", "2002::1", "64:ff9b::"):
        assert not address_allowed(ipaddress.ip_address(address), everything)
    for address in ("10.0.0.1", "::1", "::ffff:127.0.0.1", "2002:a00:1::1"):  # the control
        assert address_allowed(ipaddress.ip_address(address), everything)


@pytest.mark.parametrize(
    "allow", ["2002::/16", "64:ff9b::/96", "2001::/32", "::ffff:0:0/96", "::/0"]
)
def test_an_ipv6_allow_list_entry_never_opens_the_ipv4_inside(allow: str) -> None:
    allowed = (ipaddress.ip_network(allow),)
    for form in ROUTED.values():
        assert not address_allowed(form(IPv4("169.254.169.254")), allowed)
        assert address_allowed(form(GLOBAL_V4), allowed)  # the control
    assert address_allowed(IPv6("fd00::1"), (ipaddress.ip_network("::/0"),))
    assert not address_allowed(IPv6("fd00::1"), (ipaddress.ip_network("2002::/16"),))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]:8080/",
        "http://[::127.0.0.1]/",
        "http://[2002:7f00:1::1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[::ffff:0:7f00:1]/",
        "http://[::ffff:7f00:1]/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[fe80::1%25eth0]/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http:///x",
        "",
    ],
)
def test_urls_that_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(BlockedTarget):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "fixed"),
    [
        ("http://[2001:4860::1/", "http://[2001:4860::1]/"),
        ("http://[2001:4860::1]x/", "http://[2001:4860::1]/"),
        ("http://example.com:abc/", "http://example.com:8080/"),
        ("http://example.com:99999/", "http://example.com:9999/"),
        ("http://%5B2001:4860::1%5D/", "http://[2001:4860::1]/"),
    ],
)
def test_urls_that_do_not_parse_are_invalid_input(url: str, fixed: str) -> None:
    """A `ValueError` (the relay answers 422 `invalid_body`), not an unexpected crash."""
    with pytest.raises(ValueError, match=r".") as raised:
        check_url(url)
    assert not isinstance(raised.value, BlockedTarget)
    check_url(fixed)  # the control: the same URL, parseable, passes


@pytest.mark.parametrize(
    "host",
    ["127.1", "0x7f000001", "2130706433", "017700000001", "0177.0.0.1", "10.1", "0xa9fea9fe"],
)
def test_hosts_the_c_library_reads_as_ipv4_are_checked_as_addresses(host: str) -> None:
    """Resolving `0x7f000001` gives 127.0.0.1 without asking DNS; the URL is refused up front."""
    with pytest.raises(BlockedTarget):
        check_url(f"http://{host}:8080/hook")
    everything = (ipaddress.ip_network("0.0.0.0/0"),)
    check_url(f"http://{host}:8080/hook", everything)  # the control: an address, allow-listed


def test_names_are_left_to_the_resolver_and_allowed_literals_pass() -> None:
    check_url("https://example.com/hook")
    check_url("http://127.0.0.1:3000/api", LOOPBACK)
    check_url("http://[2002:808:808::1]/hook")
    check_url("http://[64:ff9b::8.8.8.8]:8443/hook")


_FORMS = st.sampled_from(sorted(ALL_FORMS))
_IPV4 = st.integers(0, 2**32 - 1).map(IPv4)


@hypothesis_settings(derandomize=True, max_examples=1000, database=None)
@given(name=_FORMS, inner=_IPV4)
def test_a_form_passes_exactly_when_the_ipv4_inside_would(name: str, inner: IPv4) -> None:
    """Over the whole IPv4 space (seeded): each form decides like the IPv4 it carries, with the
    form's own range allow-listed where it is not global by itself."""
    form = ALL_FORMS[name]
    if form(inner) in (IPv6("::"), IPv6("::1")):
        assert embedded_ipv4(form(inner)) == ()  # the unspecified and loopback addresses
        return
    own_range = NOT_GLOBAL_THEMSELVES.get(name, (form, None))[1]
    allow = (own_range,) if own_range is not None else ()
    assert address_allowed(form(inner), allow) is is_global(inner)
    listed = (*allow, ipaddress.ip_network(f"{inner}/32"))
    assert address_allowed(form(inner), listed) is (not inner.is_unspecified)


_URL_PIECES = st.sampled_from(
    ["http://", "https://", "[", "]", ":", "%", "%25", "::", "ffff", "7f00", ".", "/", "@", "1",
     "127", "0x7f", "64:ff9b", "2002", " ", "\x00", "é", "#", "?", "99999", "-1"]
)  # fmt: skip


@hypothesis_settings(derandomize=True, max_examples=1000, database=None)
@given(
    st.one_of(
        st.lists(_URL_PIECES, max_size=12).map("".join),
        st.text(max_size=40).map(lambda host: f"http://{host}/hook"),
        st.text(max_size=40).map(lambda host: f"http://[{host}]/hook"),
    )
)
def test_check_url_answers_every_string_with_pass_blocked_or_invalid(url: str) -> None:
    """A hostile URL passes, is refused (`BlockedTarget`) or is invalid (`ValueError`): no other
    error escapes to become a 500."""
    assert outcome(url) in {"passed", "blocked", "invalid"}
    controls = ("https://example.com/", "http://[::1]/", "http://[::1/")
    assert [outcome(control) for control in controls] == ["passed", "blocked", "invalid"]


def outcome(url: str) -> str:
    try:
        check_url(url)
    except BlockedTarget:
        return "blocked"
    except ValueError:
        return "invalid"
    return "passed"
