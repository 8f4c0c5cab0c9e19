from __future__ import annotations

import ipaddress

import pytest

from wabus.ssrf import BlockedTarget, address_allowed, check_url

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    ],
)  # fmt: skip
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_global_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


def test_allow_list_opens_a_range_and_only_that_range() -> None:
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), LOOPBACK)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]:8080/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http:///x",
    ],
)
def test_urls_that_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(BlockedTarget):
        check_url(url)


def test_names_are_left_to_the_resolver_and_allowed_literals_pass() -> None:
    check_url("https://example.com/hook")
    check_url("http://127.0.0.1:3000/api", LOOPBACK)
