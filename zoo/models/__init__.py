"""Model families composed from :mod:`zoo.ops`. Importing this package registers every constructor."""
from zoo.models import deeplab, flownet, resnet  # noqa: F401
