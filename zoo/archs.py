"""The constructor table: registry ``arch`` names -> Python callables.

A registry entry names its constructor by a key of this table, never by an import path, so a
registry file (including a user's own YAML) can never run arbitrary code. Model families register
their constructors with :func:`register_arch`; users can add their own the same way. The built-in
families (:data:`BUILTIN_FAMILIES`) are imported by name on the first lookup, as :mod:`zoo.converters`
loads its converters: the table sits below the models (they import it to register) and never imports
them at import time.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable

from torch import nn

from zoo.errors import UnknownArchError

ArchFn = Callable[..., nn.Module]

_ARCHS: dict[str, ArchFn] = {}
BUILTIN_FAMILIES = "zoo.models"  # the package whose import registers every built-in constructor


def register_arch(name: str, fn: ArchFn | None = None, *, replace: bool = False):
    """Register ``fn`` as the constructor called ``name`` (usable as a decorator).

    The constructor takes the entry's ``args`` as keyword arguments and returns an ``nn.Module``.
    Registering a name twice is an error unless ``replace=True``.
    """

    def add(f: ArchFn) -> ArchFn:
        if name in _ARCHS and _ARCHS[name] is not f and not replace:
            raise ValueError(
                f"arch {name!r} is already registered (by {_ARCHS[name].__module__}); "
                "pass replace=True to override it"
            )
        _ARCHS[name] = f
        return f

    return add(fn) if fn is not None else add


def get_arch(name: str) -> ArchFn:
    """The constructor registered as ``name``; raises :class:`UnknownArchError` with suggestions."""
    _load_builtin_families()
    try:
        return _ARCHS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ARCHS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownArchError(
            f"unknown arch {name!r}: it is not in zoo's constructor table.{hint} "
            "Register a constructor with zoo.register_arch(name, fn) first."
        ) from None


def list_archs() -> list[str]:
    """The names of every registered constructor (built-in and user-registered), sorted."""
    _load_builtin_families()
    return sorted(_ARCHS)


def _load_builtin_families() -> None:
    importlib.import_module(BUILTIN_FAMILIES)  # importing the families registers their constructors
