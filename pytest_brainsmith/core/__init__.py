"""The core: blueprint -> execution tree -> engine -> cache. Imports no pytest.

A blueprint (``blueprint``) becomes a ``DesignSpace``; ``tree`` turns it into an
execution tree of shared segments; the engine builds the segments a design needs
through the content-addressed ``cache``, each through the FINN adapter
(``pytest_brainsmith.finn``).
"""
