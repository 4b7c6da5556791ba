"""A Starlette (ASGI) app; url_for() builds links under the site's root_path."""

import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def where(request):
    return JSONResponse({
        "app": "starlette",
        "root_path": request.scope["root_path"],
        "path": request.url.path,
        "link": request.url_for("where", rest="page").path,
        # True under an ASGI server; a WSGI server (--server cheroot) runs no lifespan.
        "lifespan": getattr(request.state, "started", False),
    })


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"started": True}  # ASGI lifespan state, reaching every request


app = Starlette(routes=[Route("/{rest:path}", where, name="where")], lifespan=lifespan)
