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
from zoo.ops.deform_ps_roi_pool import DeformPSRoIPool, deform_ps_roi_pool, deform_ps_roi_pool_reference  # noqa: E402
from zoo.ops.dynamic_filter import (  # noqa: E402
    DynamicConv2d,
    DynamicLocalFilter,
    MixtureNames,
    dynamic_conv2d,
    dynamic_conv2d_reference,
    dynamic_local_filter,
    dynamic_local_filter_reference,
    kernel_mixture_conv2d,
    kernel_mixture_conv2d_reference,
    mix_kernels,
    per_sample_conv2d,
)
from zoo.ops.cond_conv import CondConv2d, CondConvRouting, cond_conv2d, cond_conv2d_reference  # noqa: E402
from zoo.ops.dy_conv import DyConv2d, dy_conv2d, dy_conv2d_reference, set_temperature, temperature_schedule  # noqa: E402
from zoo.ops.dynet import DyNetConv2d, dynet_conv2d, dynet_conv2d_reference  # noqa: E402
from zoo.ops.cac import (  # noqa: E402
    ContextAdaptiveConv,
    cac_kernels,
    cac_kernels_reference,
    cac_weighting,
    cac_weighting_reference,
)
from zoo.ops.context_module import ContextModule, context_module, context_module_reference  # noqa: E402
from zoo.ops.dense_crf import DEEPLAB_V2_CRF, DenseCRF, dense_crf, dense_crf_reference  # noqa: E402
from zoo.ops.depth_dc import DDPM, BasicConv2d, DenseLayer, DepthDC  # noqa: E402
from zoo.ops.dmnet import (  # noqa: E402
    DynamicConvModule,
    dynamic_depthwise_conv2d,
    dynamic_depthwise_conv2d_reference,
)
from zoo.ops.dynamic_mask_head import (  # noqa: E402
    DynamicMaskHead,
    aligned_bilinear,
    compute_locations,
    dynamic_mask_head,
    dynamic_mask_head_reference,
    dynamic_params_counts,
    parse_dynamic_params,
    relative_coordinates,
)
from zoo.ops.lsdfn import LSDFN, lsdfn, lsdfn_reference  # noqa: E402
from zoo.ops.correlation import Correlation, correlation, correlation_reference  # noqa: E402
from zoo.ops.aspp import ASPP, aspp_reference, aspp_v2, aspp_v2_reference, atrous_conv2d  # noqa: E402
from zoo.ops.multiscale import MultiScaleFusion, multiscale_fusion, multiscale_fusion_reference  # noqa: E402
