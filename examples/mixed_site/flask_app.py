"""A Flask app; url_for() builds links under the prefix the site mounted it at."""

import flask

app = flask.Flask(__name__)


@app.route("/", defaults={"rest": ""})
@app.route("/<path:rest>")
def where(rest):
    return {
        "app": "flask",
        "script_name": flask.request.script_root,
        "path_info": flask.request.path,
        "link": flask.url_for("where", rest="page"),
    }
