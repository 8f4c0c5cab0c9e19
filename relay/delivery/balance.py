"""Fair shares of the webhook endpoints among the relays that run, so that adding relays spreads
delivery instead of leaving it all with whichever relay claimed the leases first.

Every relay knows every endpoint and counts the relays alive (`relay.delivery.presence`); each
holds at most ceil(endpoints / relays) leases. It claims a free lease only below that share and
hands its surplus over. The shares add up to at least the number of endpoints, so every endpoint
always fits on some relay; a relay that has not counted yet (NATS away at its start) has no limit,
which is how a single relay behaves anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Set
from dataclasses import dataclass, field


def fair_share(endpoints: int, relays: int) -> int:
    """The most endpoints one of `relays` relays should deliver for."""
    if endpoints <= 0:
        return 0
    return math.ceil(endpoints / max(relays, 1))


def surplus(held: Iterable[str], share: int) -> list[str]:
    """The held endpoints to hand over: those beyond the share, last in key order, so that checks
    repeated while a hand-over is under way pick the same ones."""
    ordered = sorted(held)
    return ordered[max(share, 0) :]


@dataclass
class Balance:
    """This relay's view: how many relays run (None until counted), which endpoints it knows, and
    which of them are disabled (they take no delivery, so they are left out of the shares:
    otherwise one relay could hold every endpoint that works while another held only disabled
    ones)."""

    relays: int | None = None
    endpoints: Set[str] = frozenset()
    """The endpoints this relay runs a dispatcher for (the service passes its live view)."""
    disabled: set[str] = field(default_factory=set)
    """As this relay's dispatchers last found them in the endpoints bucket."""

    def note(self, endpoint: str, *, disabled: bool) -> None:
        if disabled:
            self.disabled.add(endpoint)
        else:
            self.disabled.discard(endpoint)

    @property
    def share(self) -> int | None:
        """The most leases to hold now; None for no limit."""
        if self.relays is None:
            return None
        return fair_share(len(self.endpoints - self.disabled), self.relays)

    def may_claim(self, held: int) -> bool:
        share = self.share
        return share is None or held < share

    def to_hand_over(self, held: Iterable[str]) -> list[str]:
        share = self.share
        return [] if share is None else surplus(held, share)
