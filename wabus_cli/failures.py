"""How a `wabus` command ends when it cannot do its job: one line on stderr, an exit code a script
can branch on — never a traceback."""

from __future__ import annotations

from enum import IntEnum
from typing import NoReturn

import typer


class ExitCode(IntEnum):
    FAILED = 1
    """The request was refused (the API's problem is shown) or did not succeed (a failed send)."""
    USAGE = 2
    """Bad arguments or settings, or nothing to talk to (as for click's own usage errors)."""
    UNREACHABLE = 3
    """The relay or NATS did not answer: start it, or point the command at it; retrying may work."""


def fail(message: str, code: ExitCode = ExitCode.FAILED, *details: str) -> NoReturn:
    """Print `✘ message` (and each detail indented below it) on stderr and exit with `code`."""
    typer.echo(f"✘ {message}", err=True)
    for detail in details:
        typer.echo(f"    {detail}", err=True)
    raise typer.Exit(code)
