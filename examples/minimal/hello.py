"""The smallest site: one plain WSGI app.

    wspbus serve --chdir examples/minimal hello:app
    wspbus serve --chdir examples/minimal --reload hello:app     # restarts when you save
    python examples/minimal/hello.py                             # the same, through quickstart()
"""


def app(environ, start_response):
    body = b"Hello from wspbus!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    import sys

    from wspbus.deploy.launch import quickstart

    sys.exit(quickstart(app, bind=sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"))
