"""A trivial WSGI app, served by `wspbus serve` and by gunicorn in bench_serve.py."""

GREETING = b"Hello v1\n"  # bench_serve.py rewrites this line to check that a reload serves fresh code


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(GREETING)))])
    return [GREETING]
