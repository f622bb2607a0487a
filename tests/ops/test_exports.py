"""zoo.ops exports every operator of the seeds under its documented name."""
import torch

import zoo.ops

MODULES = ["LSDFN", "Correlation", "DeformConv2d", "ModulatedDeformConv2d", "DeformRoIPool", "ModulatedDeformRoIPool",
           "PSRoIPool", "DeformPSRoIPool", "DynamicConv2d", "DynamicLocalFilter", "CondConv2d", "DyConv2d",
           "DyNetConv2d", "DynamicConvModule", "DepthDC", "DDPM", "ContextAdaptiveConv", "DynamicMaskHead", "ASPP",
           "MultiScaleFusion", "ContextModule"]
FUNCTIONS = ["correlation", "lsdfn", "lsdfn_reference", "correlation_reference", "deform_conv2d",
             "deform_roi_pool", "ps_roi_pool", "deform_ps_roi_pool", "dynamic_conv2d", "dynamic_local_filter",
             "cond_conv2d", "dy_conv2d", "dynet_conv2d"]


def test_every_operator_is_exported_under_its_name():
    missing = [n for n in MODULES + FUNCTIONS if not hasattr(zoo.ops, n)]
    assert not missing, f"zoo.ops lacks {missing}"
    for name in MODULES:
        assert issubclass(getattr(zoo.ops, name), torch.nn.Module), name
