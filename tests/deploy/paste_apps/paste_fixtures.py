"""Paste Deploy factories for tests/deploy/test_paste.py: an app, a filter, one that fails.

The ini files the tests write name them with ``use = call:paste_fixtures:NAME``; the served
process finds this module through ``--pythonpath``.
"""

import logging

log = logging.getLogger(__name__)


def text_app(global_conf, text, **local_conf):
    """An app factory: the app answers ``text`` and what the ini's [DEFAULT] said."""
    log.info("built %r", text)
    body = ("%s | greeting=%s | here=%s\n" % (text, global_conf.get("greeting"), global_conf.get("here"))).encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Script-Name", environ.get("SCRIPT_NAME", ""))])
        return [body]
    return app


def stamp_filter(global_conf, header="X-Stamp", value="stamped"):
    """A filter factory: the filter adds one response header."""
    def wrap(app):
        def filtered(environ, start_response):
            def stamped(status, headers, exc_info=None):
                return start_response(status, [*headers, (header, value)], exc_info)
            return app(environ, stamped)
        return filtered
    return wrap


def broken_app(global_conf, **local_conf):
    """An app factory that fails, as a mistyped setting would make a real one fail."""
    raise RuntimeError("the database URL %r is not reachable" % local_conf.get("db", ""))
