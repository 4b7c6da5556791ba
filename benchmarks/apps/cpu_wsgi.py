"""A CPU-bound WSGI app: each request spends ~2 ms running Python (bench_http.py, workers figures).

The time is the request thread's own CPU time, so the work per request is the same on any
machine, and threads of one process share it through the GIL as any Python code does.
"""

import time

WORK = 0.002  # seconds of CPU per request
BODY = b"done\n"


def app(environ, start_response):
    until = time.thread_time() + WORK
    spins = 0
    while time.thread_time() < until:
        spins += 1
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
