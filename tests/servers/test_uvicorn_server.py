"""uvicorn specifics: a stop that loses no connection asyncio has already accepted."""

from __future__ import annotations

import asyncio
import select
import socket
import threading

import pytest

from serving import asgi_hello
from support import DEADLINE
from wspbus.servers import uvicorn_server
from wspbus.servers.backend import ServeOptions
from wspbus.servers.sockets.binds import Bind, open_listener


def test_a_connection_accepted_in_the_loop_turn_before_the_shutdown_is_answered():
    """asyncio accepts in one turn of the loop and makes the connection's transport in the next.
    A shutdown whose first step comes in between (queued before that transport's task) must still
    answer the request; closing the servers at once made the transport fail (CPython gh-109564)
    and left the socket to be reset when collected, or at a restart's exec.

    The turns are forced, not raced: the loop is held while the client connects and sends, then
    the shutdown is queued for the turn whose select() finds the connection.
    """
    listener = open_listener(Bind.parse("127.0.0.1:0"))
    server = uvicorn_server.create(asgi_hello, listener.dup(), ServeOptions(graceful_timeout=5))
    server.prepare()
    loop = server._shared.thread.loop
    held, release, shut_down = threading.Event(), threading.Event(), threading.Event()

    def hold():  # one turn of the loop, until the connection waits in the accept queue
        held.set()
        release.wait(DEADLINE)
        loop.call_soon(begin_shutdown)  # the next turn runs it before the accept that turn makes

    def begin_shutdown():  # its first step is queued ahead of the accepted connection's transport task
        loop.create_task(server._shutdown()).add_done_callback(lambda _task: shut_down.set())

    client = None
    try:
        loop.call_soon_threadsafe(hold)
        assert held.wait(DEADLINE)
        client = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
        client.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        assert select.select([listener], [], [], DEADLINE)[0]  # queued: the next select() sees it
        release.set()
        reply = b""
        try:
            while chunk := client.recv(4096):
                reply += chunk
        except OSError as exc:  # reset (or no answer at all): the connection was lost
            reply += b"<%r>" % exc
        assert shut_down.wait(DEADLINE)
    finally:
        release.set()
        server.stop()
        listener.close()
        if client is not None:
            client.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\nhello /late from " in reply, reply


def test_a_shared_listener_takes_one_connection_per_turn_of_the_loop():
    """asyncio accepts until the queue is empty at each wake-up: with workers sharing a listener,
    the first one woken took every connection a client opened together (wrk's 10 on one worker of
    two). One per turn leaves the others to whichever worker accepts next. (A listener nobody
    shares keeps asyncio's batches: deploy/launch.py asks for this with more than one worker.)"""
    paced = uvicorn_server.OneAcceptPerTurn.taking(open_listener(Bind.parse("127.0.0.1:0")), every_accept=True)
    paced.setblocking(False)
    clients = [socket.create_connection(paced.getsockname(), timeout=DEADLINE) for _ in range(2)]

    async def two_turns() -> None:
        assert select.select([paced], [], [], DEADLINE)[0]
        first, _ = paced.accept()
        first.close()
        with pytest.raises(BlockingIOError):
            paced.accept()  # the second connection is waiting, but not for this turn
        await asyncio.sleep(0)
        second, _ = paced.accept()
        second.close()

    try:
        asyncio.run(two_turns())
    finally:
        for client in clients:
            client.close()
        paced.close()


def test_an_accept_outside_a_running_loop_paces_nothing():
    """An accept with no loop running (a thread, a loop not started) returns its connection and
    leaves the next accepts alone: found in review, the socket refused every later accept (its
    turn never ended) and the loop spun on the readable listener."""
    paced = uvicorn_server.OneAcceptPerTurn.taking(open_listener(Bind.parse("127.0.0.1:0")), every_accept=True)
    paced.settimeout(DEADLINE)
    first = socket.create_connection(paced.getsockname(), timeout=DEADLINE)
    try:
        paced.accept()[0].close()  # e.g. from a thread, or a loop that is not running
        second = socket.create_connection(paced.getsockname(), timeout=DEADLINE)

        async def later_turns() -> bool:
            loop = asyncio.get_running_loop()
            accepted = asyncio.Event()

            class Noting(asyncio.Protocol):
                def connection_made(self, transport):
                    transport.close()
                    accepted.set()

            paced.setblocking(False)
            server = await loop.create_server(Noting, sock=paced)
            try:
                await asyncio.wait_for(accepted.wait(), DEADLINE)
                return True
            except asyncio.TimeoutError:
                return False
            finally:
                server.close()
                await server.wait_closed()
                await asyncio.sleep(0)  # the closed transport's last callback
        assert asyncio.run(later_turns()), "the loop never accepted again (and spun: the listener stays readable)"
        second.close()
    finally:
        first.close()
        paced.close()
