"""Deferred imports, so that ``import emul`` does not load Numba (kernels load on first use)."""

import importlib


class LazyModule:
    """Stands for a module and imports it on first attribute access (then Python's cache)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)
