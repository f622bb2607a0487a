"""The operators' name for :mod:`zoo.checks` (which modules outside ``zoo.ops`` import directly, so that
they do not import every operator with the ``zoo.ops`` package)."""
from zoo.checks import check_floating, check_same, check_shape

__all__ = ["check_floating", "check_same", "check_shape"]
