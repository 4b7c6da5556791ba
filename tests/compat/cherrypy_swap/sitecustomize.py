"""Put on PYTHONPATH of the 'swapped' run of CherryPy's test suite (and of every process it starts).

When ``cherrypy.process.wspbus`` has been executed, and before anything else can take a name
from it (``cherrypy.process`` does ``from .wspbus import bus`` and ``cherrypy`` makes that its
``engine``), the names a CherryPy user would import from it are replaced by wspbus's: ``Bus``,
``ChannelFailures`` and ``states``, and ``bus`` becomes ``wspbus.bus``, the process's one wspbus
bus. That is "changing only the import", done from outside: CherryPy's code, its plugins, its
servers and its tests are the installed ones, unchanged. ``cherrypy.engine`` IS ``wspbus.bus``.

Then the sitecustomize this one stands in front of, if any, is imported, as site would have.
"""

SWAPPED_MODULE = "cherrypy.process.wspbus"


def _swap(module) -> None:
    """Replace the bus API names of CherryPy's wspbus module by wspbus's."""
    import wspbus

    module.Bus = wspbus.Bus
    module.ChannelFailures = wspbus.ChannelFailures
    module.states = wspbus.states
    module.bus = wspbus.bus


class _SwappingLoader:
    """Runs the real loader, then swaps; anything else is the real loader's."""

    def __init__(self, real) -> None:
        self._real = real

    def create_module(self, spec):
        return self._real.create_module(spec)

    def exec_module(self, module) -> None:
        self._real.exec_module(module)
        _swap(module)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _SwappingFinder:
    """Finds CherryPy's wspbus module as the path finder does, with the swapping loader."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != SWAPPED_MODULE:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _SwappingLoader(spec.loader)
        return spec


def _install_then_import_the_real_one() -> None:
    import os
    import sys

    sys.meta_path.insert(0, _SwappingFinder)
    here = os.path.dirname(os.path.abspath(__file__))
    # Off sys.path (it holds only this file), so that the import below finds the real one;
    # PYTHONPATH keeps it, so that the processes this one starts swap too.
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    from wspbus._process.site_chain import import_shadowed_sitecustomize

    import_shadowed_sitecustomize()


_install_then_import_the_real_one()
