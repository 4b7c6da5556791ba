"""Put on PYTHONPATH by wspbus for one restart only (see wspbus._process.import_map).

Runs before ``__main__``: takes over the import map the old process handed over, takes this
directory off sys.path and PYTHONPATH again, then imports the sitecustomize that this one
stood in front of, if there is one, as the site module would have.
"""


def _take_over_then_import_the_real_one() -> None:
    import os
    import sys

    here = os.path.dirname(__file__)
    try:
        from wspbus._process import import_map as _import_map
    except ImportError:  # wspbus is put on sys.path by the program itself: use this copy
        packages = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(here))))
        sys.path.insert(0, packages)
        try:
            from wspbus._process import import_map as _import_map
        finally:
            sys.path.remove(packages)
    _import_map.take_over(here)
    from wspbus._process.site_chain import import_shadowed_sitecustomize

    import_shadowed_sitecustomize()


_take_over_then_import_the_real_one()
