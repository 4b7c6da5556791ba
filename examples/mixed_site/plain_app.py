"""A plain WSGI function, mounted at the site's root."""

import json


def app(environ, start_response):
    where = {
        "app": "plain",
        "script_name": environ["SCRIPT_NAME"],
        "path_info": environ["PATH_INFO"],
    }
    body = json.dumps(where).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
