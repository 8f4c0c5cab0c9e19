"""Fixtures of the relay route tests: the app on in-memory fakes of its stores, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes import Fakes
from tests.relay_helpers import relay_on


@pytest.fixture
def fakes() -> Fakes:
    """Empty stores; a test module may override this fixture to start from other data."""
    return Fakes()


@pytest.fixture
async def relay(fakes: Fakes) -> AsyncIterator[httpx.AsyncClient]:
    """The real relay app built on `fakes`, its lifespan run, served in process."""
    async with relay_on(fakes) as client:
        yield client
