"""zoo.ops: every dynamic, deformable and dilated operator, one file per family.

Each file has a plain reference implementation (``*_reference``) kept for the tests, and the fast path
used by the models. Nothing here knows about models.
"""

from zoo.ops.deform_conv import (  # noqa: E402
    DeformConv2d,
    ModulatedDeformConv2d,
    deform_conv2d,
    deform_conv2d_reference,
    modulated_deform_conv2d,
)
from zoo.ops.deform_roi_pool import (  # noqa: E402
    DeformRoIPool,
    ModulatedDeformRoIPool,
    PSRoIPool,
    deform_roi_pool,
    deform_roi_pool_reference,
    ps_roi_pool,
)
