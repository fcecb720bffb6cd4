"""The application: the ``prefloop`` command, ``prefloop run`` (the loop over one config), the held-out split,
the stage runner and the run report.

Layers, from the top (each may import only the ones below it; a test walks every import, including those inside
functions, and fails on an upward edge or a cycle)::

    loop        this package: imports every stage and the foundation
    generator   may import judge (rank scores candidates with the judge's scorer) and prefloop
    judge       may import prefloop only          trainer   may import prefloop only
    prefloop    the foundation: imports nothing of ours above it

``prefloop/__main__.py`` (``python -m prefloop``) is the one entry point below this package that starts it; it is
a script, not a module anything imports.
"""
