"""The top layer: the `wabus` command line and the local dev stack (`wabus dev`).

The one package that imports both `connector` and `relay`; they import only `wabus` (the shared
plumbing) and `schemas` (`[tool.importlinter]` in pyproject.toml checks it). A top-level name of
its own, prefixed like the distribution: a bare `cli` would collide with the many other
distributions that install one.
"""
