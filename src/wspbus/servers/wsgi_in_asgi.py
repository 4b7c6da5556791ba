"""A WSGI app served by an ASGI server: each request runs on a thread pool, with as few hand-overs
between the event loop and the thread as the response allows.

a2wsgi's WSGIMiddleware (what this replaces) makes the request thread wait for the event loop at
every step: once for the status, once per body chunk, once for the end; each wait is a wake-up
of the loop and of the thread, and the thread also waits for the GIL the loop holds. A hello
app served so did 1,983 req/s where the same WSGI server without the loop did 6,714. Here:

* a body that arrived with the request (every GET, most forms) is read before the app runs, so
  ``wsgi.input`` is an in-memory file; a longer body is fetched from the loop as the app reads;
* a response whose body is a list or tuple (what most frameworks return) comes back with the
  thread's result and is sent by the loop: one hand-over each way per request;
* any other iterable streams: the thread hands each chunk to the loop and only waits for the
  previous one to be sent, so sending one chunk overlaps making the next, and a slow client
  slows the app down instead of filling memory. ``write()`` streams the same way.

As PEP 3333 asks, the status and headers leave with the first non-empty chunk (or at the end),
so an app may still call start_response again with ``exc_info`` until then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import sys
from collections.abc import Callable
from typing import Any

from .protocols import Environ, Message, Receive, Scope, Send, WSGIApp

__all__ = ["WsgiInAsgi"]

DEFAULT_THREADS = 10
#: The size of the buffer a streamed request body is read through.
BODY_BUFFER = 64 * 1024
_NO_BODY_STATUSES = (204, 304)
#: A whole response: (status, headers, body).
_Whole = tuple[int, list[tuple[bytes, bytes]], bytes]


class WsgiInAsgi:
    """``app`` (WSGI) as an ASGI app, run on ``threads`` threads; ``close()`` ends the threads."""

    def __init__(self, app: WSGIApp, threads: int | None = None) -> None:
        self.app = app
        self._pool = concurrent.futures.ThreadPoolExecutor(threads or DEFAULT_THREADS,
                                                           thread_name_prefix="wspbus WSGI")

    def close(self) -> None:
        """Idle threads end at once; one still busy ends when its request returns."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":  # WSGI has no websockets: refuse the handshake
            await send({"type": "websocket.close", "code": 1000})

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        body = first.get("body", b"")
        if first.get("more_body", False):
            stream: Any = io.BufferedReader(_RequestBody(loop, receive, body), BODY_BUFFER)
        else:
            stream = io.BytesIO(body)
        exchange = _Exchange(loop, send, scope["method"] == "HEAD")
        run = contextvars.copy_context().run
        response = await loop.run_in_executor(self._pool, run, exchange.run, self.app, environ_of(scope, stream))
        await exchange.finish(response)


def environ_of(scope: Scope, body: Any) -> Environ:
    """The WSGI environ of an ASGI HTTP request (PEP 3333: text is latin-1 decoded bytes)."""
    root = scope.get("root_path", "")
    path = scope["path"]
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    environ: Environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/%s" % scope.get("http_version", "1.1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.input_terminated": True,  # the body ends where the input says so, chunked or not
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    server = scope.get("server")
    host, port = server if server else ("localhost", 80)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = host, str(port or 0)
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:  # a repeated header: one value, as a proxy would fold it
            value = environ[key] + ("; " if name == "cookie" else ",") + value
        environ[key] = value
    return environ


class _Exchange:
    """One request's response, made on a pool thread and sent on the loop.

    The thread calls run(); it returns (status, headers, body) when the whole response is known
    by then, None when it already streamed it (the loop then ends the body).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send, head: bool) -> None:
        self._loop = loop
        self._send = send
        self._head = head
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._started = False  # the status and headers left
        self._sending: concurrent.futures.Future[None] | None = None  # the chunk on its way (streaming)

    # -- on the pool thread -----------------------------------------------------------------

    def run(self, app: WSGIApp, environ: Environ) -> _Whole | None:
        result = app(environ, self.start_response)
        try:
            if isinstance(result, (list, tuple)) and not self._started:
                body = b"".join(result)
                if not self._status:
                    raise RuntimeError("the WSGI app returned without calling start_response")
                return self._status, self._headers, body
            for chunk in result:
                if chunk:
                    self.write(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not self._started:
            self.write(b"")  # an empty body: the headers still leave
        self._wait_sent()
        return None

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._started:  # too late to change the response: PEP 3333 says re-raise
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status:
            raise RuntimeError("start_response called twice without exc_info")
        self._status = int(status[:3])
        self._headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return self.write

    def write(self, chunk: bytes) -> None:
        """Hand ``chunk`` to the loop once the previous one was sent (the headers go first)."""
        if not self._status:
            raise RuntimeError("the WSGI app wrote before calling start_response")
        messages = [] if self._started else [self._start_message()]
        self._started = True
        messages.append({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        self._wait_sent()
        self._sending = asyncio.run_coroutine_threadsafe(self._send_all(messages), self._loop)

    def _wait_sent(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.result()  # raises what send() raised (the client went away): the app stops

    def _start_message(self) -> Message:
        return {"type": "http.response.start", "status": self._status, "headers": self._headers}

    # -- on the loop ------------------------------------------------------------------------

    async def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            await self._send(message)

    async def finish(self, response: _Whole | None) -> None:
        if response is None:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        status, headers, body = response
        if not self._head and status not in _NO_BODY_STATUSES and status >= 200 and not any(
                name == b"content-length" for name, _ in headers):
            headers = headers + [(b"content-length", str(len(body)).encode())]  # no chunked encoding needed
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class _RequestBody(io.RawIOBase):
    """A request body longer than its first message, fetched from the loop as the app reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, first: bytes) -> None:
        super().__init__()
        self._loop = loop
        self._receive = receive
        self._chunk = memoryview(first)
        self._more = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunk and self._more:
            message = asyncio.run_coroutine_threadsafe(self._next_message(), self._loop).result()
            if message["type"] != "http.request":  # the client went away: the body ends here
                self._more = False
                break
            self._chunk = memoryview(message.get("body", b""))
            self._more = message.get("more_body", False)
        size = min(len(buffer), len(self._chunk))
        buffer[:size] = self._chunk[:size]
        self._chunk = self._chunk[size:]
        return size

    async def _next_message(self) -> Message:
        return await self._receive()


async def _lifespan(receive: Receive, send: Send) -> None:
    """A WSGI app has nothing to start or stop: answer both steps at once."""
    for step in ("startup", "shutdown"):
        message = await receive()
        if message["type"] != "lifespan.%s" % step:
            return
        await send({"type": "lifespan.%s.complete" % step})
