"""A trivial CherryPy app on CherryPy's engine and its default server (bench_serve.py).

    python hello_cherrypy.py PORT      # PORT 0: the kernel picks one; the log line names it
    python hello_cherrypy.py PORT quiet   # no log on screen (no access log): bench_http.py
"""

import sys

import cherrypy

GREETING = b"Hello v1\n"  # bench_serve.py rewrites this line to check that a reload serves fresh code


class Root:
    @cherrypy.expose
    def index(self):
        cherrypy.response.headers["Content-Type"] = "text/plain"
        return GREETING


if __name__ == "__main__":
    cherrypy.config.update({
        "server.socket_host": "127.0.0.1",
        "server.socket_port": int(sys.argv[1]),
        "environment": "production",  # no autoreload, no tracebacks in pages
        "log.screen": sys.argv[2:] != ["quiet"],  # the "Serving on" line tells bench_serve.py the port
    })
    cherrypy.quickstart(Root())
