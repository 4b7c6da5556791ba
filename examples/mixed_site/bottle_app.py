"""A Bottle app; bottle.url() builds links under the prefix the site mounted it at."""

import bottle

app = bottle.Bottle()


@app.route("/")
@app.route("/<rest:path>", name="where")
def where(rest=""):
    return {
        "app": "bottle",
        "script_name": bottle.request.script_name,
        "path_info": bottle.request.path,
        "link": app.get_url("where", rest="page"),
    }
