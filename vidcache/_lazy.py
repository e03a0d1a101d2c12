"""Package namespaces that import their modules on first use.

`from vidcache.probe import LinearProbe` keeps working, but importing `vidcache.probe.config` (or
running `vidcache --help`) no longer imports every module of the package, torch among them.

    __getattr__, __dir__, __all__ = exports(__name__, {"vidcache.probe.linear": ["LinearProbe", ...]})
"""

from __future__ import annotations

import importlib
import sys
import types


def exports(package: str, modules: dict[str, list[str]]):
    """PEP 562 hooks for `package`: each name is imported from its module when first asked for.

    A name may equal a submodule's (`vidcache.codec.kmeans`, the function, lives in the module
    `vidcache.codec.kmeans`): importing the submodule binds it on the package, and the package then
    keeps the exported object under that name, as an eager `from .kmeans import kmeans` would.
    """
    where = {name: mod for mod, names in modules.items() for name in names}

    class _Package(types.ModuleType):
        def __setattr__(self, name, value):
            if (name in where and isinstance(value, types.ModuleType)
                    and value.__name__ == f"{package}.{name}" and where[name] == value.__name__):
                value = getattr(value, name)
            super().__setattr__(name, value)

    def __getattr__(name: str):
        mod = where.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(mod), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(sys.modules[package])))

    sys.modules[package].__class__ = _Package
    return __getattr__, __dir__, sorted(where)
