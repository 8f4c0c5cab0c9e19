"""The fair share of webhook endpoints per relay, from tables."""

from __future__ import annotations

import pytest

from relay.delivery.balance import Balance, fair_share, surplus

KEYS = ("global", "a/hook", "b/hook", "c/hook")


def known(count: int) -> frozenset[str]:
    """The first `count` endpoint keys, as a relay running their dispatchers knows them."""
    return frozenset(KEYS[:count])


@pytest.mark.parametrize(
    ("endpoints", "relays", "share"),
    [
        (0, 1, 0),
        (0, 3, 0),
        (1, 1, 1),
        (1, 3, 1),  # one endpoint: one relay delivers it, the others stand by
        (3, 1, 3),
        (3, 2, 2),
        (3, 3, 1),
        (4, 3, 2),
        (10, 4, 3),
        (3, 0, 3),  # not even itself counted yet (its key expired): treated as alone
    ],
)
def test_fair_share(endpoints: int, relays: int, share: int) -> None:
    assert fair_share(endpoints, relays) == share


@pytest.mark.parametrize(("endpoints", "relays"), [(e, r) for e in range(12) for r in range(1, 6)])
def test_shares_always_cover_every_endpoint(endpoints: int, relays: int) -> None:
    assert fair_share(endpoints, relays) * relays >= endpoints
    assert fair_share(endpoints, relays) * relays < endpoints + relays  # and no more than needed


@pytest.mark.parametrize(
    ("held", "share", "handed_over"),
    [
        (["global", "a/hook", "b/hook"], 3, []),
        (["global", "a/hook", "b/hook"], 2, ["global"]),
        (["global", "b/hook", "a/hook"], 1, ["b/hook", "global"]),
        (["a/hook"], 0, ["a/hook"]),
        ([], 1, []),
    ],
)
def test_surplus_is_the_last_in_key_order(
    held: list[str], share: int, handed_over: list[str]
) -> None:
    assert surplus(held, share) == handed_over
    assert surplus(list(reversed(held)), share) == handed_over  # whatever order they come in


@pytest.mark.parametrize(
    ("relays", "endpoints", "held", "may_claim"),
    [
        (None, 3, 3, True),  # not counted yet: no limit
        (1, 3, 2, True),
        (1, 3, 3, False),
        (2, 3, 1, True),
        (2, 3, 2, False),
        (3, 3, 0, True),
        (3, 3, 1, False),
    ],
)
def test_may_claim_below_the_share_only(
    relays: int | None, endpoints: int, held: int, may_claim: bool
) -> None:
    assert Balance(relays, known(endpoints)).may_claim(held) is may_claim


def test_hands_over_nothing_before_counting() -> None:
    assert Balance(None, known(3)).to_hand_over(["a", "b", "c"]) == []
    assert Balance(3, known(3)).to_hand_over(["a", "b", "c"]) == ["b", "c"]


@pytest.mark.parametrize(
    ("relays", "endpoints", "disabled", "share"),
    [
        (2, 3, set(), 2),  # the control: every endpoint counts
        (2, 3, {"global"}, 1),  # two that work, two relays: one each
        (2, 3, {"global", "a/hook"}, 1),
        (2, 3, {"global", "a/hook", "b/hook"}, 0),  # nothing to deliver
        (1, 3, {"global"}, 2),
        (3, 4, {"a/hook"}, 1),
        (2, 3, {"gone/hook"}, 2),  # noted disabled, then removed: no longer subtracted
    ],
)
def test_disabled_endpoints_are_left_out_of_the_shares(
    relays: int, endpoints: int, disabled: set[str], share: int
) -> None:
    balance = Balance(relays, known(endpoints))
    for endpoint in disabled:
        balance.note(endpoint, disabled=True)
    assert balance.share == share


def test_an_endpoint_enabled_again_counts_again() -> None:
    balance = Balance(2, known(3))
    balance.note("global", disabled=True)
    assert balance.to_hand_over(["a/hook", "b/hook"]) == ["b/hook"]  # share 1
    balance.note("global", disabled=False)
    balance.note("global", disabled=False)  # noted again by the next pass: still counted once
    assert balance.share == 2
    assert balance.to_hand_over(["a/hook", "b/hook"]) == []
