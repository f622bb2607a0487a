"""Model families composed from :mod:`zoo.ops`. Importing this package registers every constructor."""
from zoo.models import (  # noqa: F401
    cacnet,
    condinst,
    couplenet,
    deeplab,
    dfn,
    dilation,
    dmnet,
    drn,
    dy_mobilenet,
    dynamic_resnet,
    efficientnet_cc,
    flownet,
    hdfnet,
    rcnn,
    resnet,
    rfcn,
)
