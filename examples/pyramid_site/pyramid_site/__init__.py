"""A minimal Pyramid application: the ``main`` factory Paste Deploy calls for ``[app:main]``."""

from pyramid.config import Configurator


def main(global_config, **settings):
    """Return the Pyramid WSGI application (``global_config``: the ini's [DEFAULT] plus here/__file__)."""
    with Configurator(settings=settings) as config:
        config.include(".routes")
        config.scan(".views")
    return config.make_wsgi_app()
