"""The head checks on what a server parsed (asgi_head_guard, inspect_environ), at their edges.

Both skip rebuilding a head's lines when a quick look shows nothing near a limit and no field
that frames a body; these tests hold that look to the full check: one byte past any limit, a
framing field in any case, a limit configured small, and each is still refused.
"""

from __future__ import annotations

import asyncio

import pytest

from wspbus.servers.request_head import HeadLimits, asgi_head_guard, inspect_environ

LIMITS = HeadLimits(max_request_line=30, max_header_field=20, max_headers=3)


def scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> dict:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": query,
            "http_version": "1.1", "headers": [(b"host", b"t")] if headers is None else headers}


def guarded_status(request_scope: dict) -> int:
    """The status the guarded app answers: 200 from the app, else the guard's refusal."""
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(_awaited(asgi_head_guard(app, LIMITS)(request_scope, receive, send)))
    return sent[0]["status"]


async def _awaited(awaitable):
    await awaitable


def environ(path: str = "/", fields: dict[str, str] | None = None, query: str = "") -> dict:
    base = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"}
    return base | ({"HTTP_HOST": "t"} if fields is None else fields)


def environ_status(request_environ: dict, limits: HeadLimits = LIMITS) -> int:
    refusal = inspect_environ(request_environ, limits)
    return 200 if refusal is None else int(refusal.status[:3])


# "GET " + target + " HTTP/1.1" is 13 bytes beside the target: 17 fit in 30.
@pytest.mark.parametrize("target, expected", [("/" + "a" * 16, 200), ("/" + "a" * 17, 414)])
def test_the_request_line_limit_is_exact(target, expected):
    assert guarded_status(scope(target)) == expected
    assert environ_status(environ(target)) == expected


def test_the_query_counts_in_the_request_line():
    assert guarded_status(scope("/", query=b"q=" + b"a" * 20)) == 414
    assert environ_status(environ("/", query="q=" + "a" * 20)) == 414


# "x-a: " is 5 bytes beside the value: 15 fit in 20.
@pytest.mark.parametrize("value, expected", [("v" * 15, 200), ("v" * 16, 431)])
def test_the_field_limit_is_exact(value, expected):
    assert guarded_status(scope(headers=[(b"x-a", value.encode())])) == expected
    assert environ_status(environ(fields={"HTTP_X_A": value})) == expected


def test_one_field_past_the_count_is_refused():
    assert guarded_status(scope(headers=[(b"x-%d" % n, b"v") for n in range(4)])) == 431
    assert environ_status(environ(fields={"HTTP_X_%d" % n: "v" for n in range(4)})) == 431
    assert guarded_status(scope(headers=[(b"x-%d" % n, b"v") for n in range(3)])) == 200


@pytest.mark.parametrize("name", [b"content-length", b"Content-Length", b"CONTENT-LENGTH"])
def test_a_framing_field_in_any_case_is_checked(name):
    assert guarded_status(scope(headers=[(name, b"5x")])) == 400
    assert guarded_status(scope(headers=[(name, b"5")])) == 200


def test_framing_in_an_environ_is_checked():
    limits = HeadLimits()
    assert environ_status(environ(fields={"CONTENT_LENGTH": "5x"}), limits) == 400
    assert environ_status(environ(fields={"CONTENT_LENGTH": "5", "HTTP_TRANSFER_ENCODING": "chunked"}), limits) == 400
    assert environ_status(environ(fields={"HTTP_TRANSFER_ENCODING": "gzip"}), limits) == 400
    assert environ_status(environ(fields={"CONTENT_LENGTH": "5"}), limits) == 200


def test_the_guard_is_not_a_coroutine_of_its_own():
    """It hands back the app's awaitable: one coroutine frame fewer on every request."""
    async def app(scope, receive, send):
        pass

    awaitable = asgi_head_guard(app, LIMITS)(scope(), None, None)
    assert awaitable.cr_code is app.__code__
    awaitable.close()


@pytest.mark.parametrize("name", [b"content-length ", b"x-a\t", b"x-a ", b""])
def test_a_name_a_lax_parser_left_malformed_is_refused(name):
    assert guarded_status(scope(headers=[(name, b"1")])) == 400


def test_a_content_length_a_lax_server_left_among_the_fields_is_checked():
    assert environ_status(environ(fields={"HTTP_CONTENT_LENGTH": "5x"}), HeadLimits()) == 400
