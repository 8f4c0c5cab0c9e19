"""Runs the transfers of one libcurl multi handle on the running asyncio loop, through libcurl's
multi-socket API, with an epoll set of its own.

pycurl ships a driver (`pycurl.AsyncCurlMulti`) that registers each socket with the asyncio loop
when libcurl asks to watch it and unregisters it when libcurl stops: on a kept-alive connection
that is twice per request, and each registration is a loop handle made and freed and two or three
system calls. Measured in the relay, that cost a fifth of its delivery throughput
(docs/webhooks.md, "Choosing the HTTP client"). Here libcurl's sockets live in an epoll set owned
by this driver, which the loop watches as one descriptor:

- a socket stays in the set between requests on a kept-alive connection; it leaves when it turns
  readable while libcurl is not waiting on it (the endpoint closed an idle connection), and the
  kernel drops it from the set by itself when libcurl closes it — so nothing here can outlive a
  socket, whatever libcurl does with it. A socket libcurl opens under a number seen before is
  announced by its socket-options callback (`prepare` installs it), which forgets the old one;
- libcurl's frequent "wake me now" timers become one loop callback per iteration, and a later
  deadline never replaces an earlier one (an early wake-up is harmless: libcurl sets the next
  deadline when it runs).

Linux only (`select.epoll`); `open_curl_loop` falls back to pycurl's driver elsewhere.
A transfer's future resolves to its handle, or fails with `pycurl.error(code, message)`.
"""

from __future__ import annotations

import asyncio
import select
from typing import Protocol

import pycurl

from wabus.logs import get_logger

log = get_logger(__name__)


class CurlDriver(Protocol):
    """What the webhook client needs of a driver."""

    def setopt(self, option: int, value: int) -> None: ...

    def prepare(self, curl: pycurl.Curl) -> None:
        """Called once for every easy handle before its first transfer."""

    async def perform(self, curl: pycurl.Curl) -> pycurl.Curl: ...

    async def aclose(self) -> None: ...


class _PycurlDriver(pycurl.AsyncCurlMulti):
    """pycurl's own driver, where there is no epoll."""

    def prepare(self, curl: pycurl.Curl) -> None:
        return None


def open_curl_loop() -> CurlDriver:
    if hasattr(select, "epoll"):
        return CurlLoop()
    return _PycurlDriver()


class CurlLoop:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._epoll = select.epoll()
        self._loop.add_reader(self._epoll.fileno(), self._on_ready)
        self._in_set: dict[int, int] = {}
        """Socket → the events it is in the epoll set for (as far as we know: the kernel drops
        a closed socket without telling)."""
        self._wanted: dict[int, int] = {}
        """Socket → the events libcurl waits for on it now (0: none)."""
        self._transfers: dict[pycurl.Curl, asyncio.Future[pycurl.Curl]] = {}
        self._kick: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def setopt(self, option: int, value: int) -> None:
        self._multi.setopt(option, value)

    def prepare(self, curl: pycurl.Curl) -> None:
        curl.setopt(pycurl.SOCKOPTFUNCTION, self._on_new_socket)

    async def perform(self, curl: pycurl.Curl) -> pycurl.Curl:
        """Run one transfer; cancelling the caller removes it (its connection is not reused)."""
        if self._closed:
            raise RuntimeError("the curl loop is closed")
        future: asyncio.Future[pycurl.Curl] = self._loop.create_future()
        self._transfers[curl] = future
        self._multi.add_handle(curl)
        try:
            return await future
        finally:
            if self._transfers.get(curl) is future:  # cancelled, or closed, while running
                del self._transfers[curl]
                self._multi.remove_handle(curl)

    async def aclose(self) -> None:
        """Stop every transfer (their callers are cancelled) and close every connection."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._kick, self._timer):
            if handle is not None:
                handle.cancel()
        for curl, future in list(self._transfers.items()):
            del self._transfers[curl]
            self._multi.remove_handle(curl)
            future.cancel()
        self._multi.close()
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    # libcurl's callbacks

    def _on_new_socket(self, fd: int, purpose: int) -> int:
        """libcurl made a socket: whatever was known of a socket with this number is gone."""
        self._in_set.pop(fd, None)
        self._wanted.pop(fd, None)
        return pycurl.SOCKOPT_OK

    def _on_socket(self, what: int, fd: int, multi: pycurl.CurlMulti, data: object) -> None:
        if what == pycurl.POLL_REMOVE:
            self._wanted[fd] = 0  # stays in the set until it closes or wakes up unwanted
            return
        wanted = (select.EPOLLIN if what & pycurl.POLL_IN else 0) | (
            select.EPOLLOUT if what & pycurl.POLL_OUT else 0
        )
        self._wanted[fd] = wanted
        events = wanted | select.EPOLLIN  # a socket in the set is always watched for reading
        if self._in_set.get(fd) == events:
            return
        self._watch(fd, events)

    def _watch(self, fd: int, events: int) -> None:
        if fd in self._in_set:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
        self._in_set[fd] = events

    def _unwatch(self, fd: int) -> None:
        self._in_set.pop(fd, None)
        self._wanted.pop(fd, None)
        self._epoll.unregister(fd)  # it is in the set: it just woke up

    def _on_timer(self, milliseconds: int) -> None:
        if self._closed or milliseconds < 0:
            return  # no deadline wanted: a pending wake-up is harmless
        if milliseconds == 0:
            if self._kick is None:
                self._kick = self._loop.call_soon(self._on_kick)
            return
        deadline = self._loop.time() + milliseconds / 1000
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_deadline)

    # the loop's callbacks

    def _on_ready(self) -> None:
        for fd, ready in self._epoll.poll(0):
            wanted = self._wanted.get(fd, 0)
            if not wanted:
                self._unwatch(fd)  # an idle connection the endpoint closed, most likely
                continue
            events = 0
            if ready & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                events |= pycurl.CSELECT_IN
            if ready & select.EPOLLOUT:
                events |= pycurl.CSELECT_OUT
            if ready & select.EPOLLERR:
                events |= pycurl.CSELECT_ERR
            self._act(fd, events)

    def _on_kick(self) -> None:
        self._kick = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _on_deadline(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        if self._closed:
            return
        multi = self._multi
        try:
            multi.socket_action(fd, events)
        except pycurl.error as error:  # the multi handle itself failed: no transfer can finish
            log.error("libcurl failed: failing every transfer in flight", error=repr(error))
            for curl in list(self._transfers):
                self._finish(curl, error)
            return
        while True:
            queued, done, failed = multi.info_read()
            for curl in done:
                self._finish(curl, None)
            for curl, code, message in failed:
                self._finish(curl, pycurl.error(code, message))
            if not queued:
                return

    def _finish(self, curl: pycurl.Curl, error: pycurl.error | None) -> None:
        future = self._transfers.pop(curl, None)
        self._multi.remove_handle(curl)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(curl)
        else:
            future.set_exception(error)
