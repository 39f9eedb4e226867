"""Lazy public attributes of a package (PEP 562): import a submodule on first access."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, origins: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose names live in other modules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    origins : mapping of str to str
        Public name -> absolute name of the module that defines it.

    Returns
    -------
    getattr, dir : callables
        Assign them to the package's ``__getattr__`` and ``__dir__``.
    """

    def __getattr__(name: str) -> Any:
        if name not in origins:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(origins[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *origins})

    return __getattr__, __dir__
