"""Every dashboard template compiles (a broken one would otherwise show first as a 500)."""

from __future__ import annotations

from importlib import resources

import pytest

from relay.ui.web import make_templates

NAMES = sorted(
    entry.name
    for entry in resources.files("relay.ui").joinpath("templates").iterdir()
    if entry.name.endswith(".html")
)


@pytest.mark.parametrize("name", NAMES)
def test_the_template_compiles(name: str) -> None:
    make_templates().get_template(name)


def test_there_are_templates() -> None:
    assert "base.html" in NAMES
