"""Exceptions raised by zoo. Every message names the thing at fault and how to fix it."""
from __future__ import annotations


class ZooError(Exception):
    """Base class of zoo's own errors."""


class UnknownModelError(ZooError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownArchError(UnknownModelError):
    pass


class RegistryError(ZooError, ValueError):
    """A registry file or entry does not follow the schema."""


class WeightsError(ZooError, RuntimeError):
    """Weights could not be found, read or verified."""


class ChecksumError(WeightsError):
    pass


class OfflineError(WeightsError):
    pass


class StateDictMismatchError(WeightsError):
    """Keys or shapes of a checkpoint do not match the model."""


class UsageError(ZooError, ValueError):
    """A command-line option has the wrong form."""


class InputError(ZooError, ValueError):
    """An input tensor has the wrong shape, dtype or range."""


class SiteError(ZooError):
    """The site's output directory cannot be written without touching files zoo did not write."""
