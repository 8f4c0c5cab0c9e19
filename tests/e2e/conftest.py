"""Hooks of the end-to-end tests: whether a test's call failed, for fixtures that keep evidence
(the browser tests' screenshots)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.browser_support import FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report
