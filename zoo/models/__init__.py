"""Model families composed from :mod:`zoo.ops`. Importing this package registers every constructor."""
from zoo.models import cacnet, deeplab, dilation, dmnet, drn, flownet, resnet  # noqa: F401
