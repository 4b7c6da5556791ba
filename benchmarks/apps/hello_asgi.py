"""A trivial ASGI app, served by uvicorn and by `wspbus serve` (uvicorn inside) in bench_serve.py."""

GREETING = b"Hello v1\n"  # bench_serve.py rewrites this line to check that a reload serves fresh code

HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(GREETING)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": GREETING})
