"""The command handler table: one handler per command kind, run in the instance's lane.

A handler gets the instance's session supervisor, the admitted command, its lane and which
delivery this is, and says how the command ends (`connector.redelivery.Settlement`). `send` is
`connector.send.SendExecutor`. The others have no failure event yet: an engine failure is logged
and counted (`wabus_connector_errors_total{code}`), and the command is acked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from connector.admission import Admitted
from connector.lanes import Lane
from connector.metrics import ERRORS
from connector.redelivery import (
    LATER_DELAY,
    OPEN_WAIT,
    SESSION_NOT_OPEN,
    Delivery,
    Done,
    Settlement,
    later,
)
from connector.supervisor import NotConnected, SessionSupervisor
from schemas.commands import (
    LOGOUT_COMMAND,
    MARK_READ_COMMAND,
    PAIR_PHONE_COMMAND,
    PRESENCE_COMMAND,
    SEND_COMMAND,
    MarkRead,
    PairPhone,
    Presence,
)
from wabus.logs import get_logger

log = get_logger(__name__)

Handler = Callable[[SessionSupervisor, Admitted, Lane, Delivery], Awaitable[Settlement]]


def handler_table(send: Handler) -> dict[str, Handler]:
    """Every command kind the admission lets through, to its handler."""
    return {
        SEND_COMMAND: send,
        PAIR_PHONE_COMMAND: pair_phone,
        LOGOUT_COMMAND: logout,
        MARK_READ_COMMAND: read,
        PRESENCE_COMMAND: presence,
    }


async def attempt(
    command: str, delivery: Delivery, act: Callable[[], Awaitable[object]]
) -> Settlement:
    """Run `act`; a session that is still coming up hands the command back, any other failure
    is logged and counted, and the command is done."""
    try:
        await act()
    except TimeoutError:
        return later(delivery, LATER_DELAY, SESSION_NOT_OPEN)
    except NotConnected as error:
        ERRORS.labels("instance_not_connected").inc()
        log.warning("command not carried out", command=command, error=str(error))
    except Exception as error:
        ERRORS.labels("engine_error").inc()
        log.warning("command failed in the engine", command=command, error=repr(error))
    return Done()


async def pair_phone(
    supervisor: SessionSupervisor, admitted: Admitted, lane: Lane, delivery: Delivery
) -> Settlement:
    """A pairing code (the session is restarted first when it ended)."""
    request = cast(PairPhone, admitted.request)
    return await attempt(admitted.command, delivery, lambda: supervisor.pair_phone(request.phone))


async def logout(
    supervisor: SessionSupervisor, admitted: Admitted, lane: Lane, delivery: Delivery
) -> Settlement:
    """Unlink the device."""
    return await attempt(admitted.command, delivery, supervisor.logout)


async def read(
    supervisor: SessionSupervisor, admitted: Admitted, lane: Lane, delivery: Delivery
) -> Settlement:
    """Read receipts; waits for the session to open."""
    request = cast(MarkRead, admitted.request)

    async def act() -> None:
        session = await supervisor.open_session(OPEN_WAIT)
        await session.mark_read(request)

    return await attempt(admitted.command, delivery, act)


async def presence(
    supervisor: SessionSupervisor, admitted: Admitted, lane: Lane, delivery: Delivery
) -> Settlement:
    """Typing / recording / paused; waits for the session to open."""
    request = cast(Presence, admitted.request)

    async def act() -> None:
        session = await supervisor.open_session(OPEN_WAIT)
        await session.set_presence(request)

    return await attempt(admitted.command, delivery, act)
