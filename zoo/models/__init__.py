"""Model families composed from :mod:`zoo.ops`. Importing this package registers every constructor."""
from zoo.models import deeplab, resnet  # noqa: F401
