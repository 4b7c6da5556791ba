"""The site's views: JSON, so a test (or curl) can read what Pyramid saw."""

import logging

from pyramid.view import view_config

log = logging.getLogger(__name__)


@view_config(route_name="home", renderer="json")
def home(request):
    settings = request.registry.settings
    return {"project": "pyramid_site", "environment": settings.get("pyramid_site.environment"),
            "debug_notfound": settings.get("pyramid.debug_notfound")}


@view_config(route_name="hello", renderer="json")
def hello(request):
    name = request.matchdict["name"]
    log.info("said hello to %s", name)
    return {"hello": name, "url": request.route_url("hello", name=name)}
