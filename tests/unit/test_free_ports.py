"""`free_port` in processes that pick ports side by side (parallel test workers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wabus import embedded
from wabus.embedded import free_port, share_ports


@pytest.fixture
def restore_share() -> Iterator[None]:
    before = embedded._SHARE
    yield
    embedded._SHARE = before


@pytest.mark.usefixtures("restore_share")
@pytest.mark.parametrize(("index", "count"), [(0, 2), (1, 2), (2, 3), (0, 1)])
def test_each_share_gets_only_its_own_ports_and_never_one_twice(index: int, count: int) -> None:
    share_ports(index, count)
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert {port // 2 % count for port in ports} == {index}


@pytest.mark.usefixtures("restore_share")
def test_two_shares_never_meet() -> None:
    share_ports(0, 2)
    first = {free_port() for _ in range(40)}
    share_ports(1, 2)
    second = {free_port() for _ in range(40)}
    assert len(first) == len(second) == 40
    assert not first & second


@pytest.mark.usefixtures("restore_share")
@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_share_outside_the_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="port share"):
        share_ports(index, count)
