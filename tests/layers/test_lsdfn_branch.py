"""zoo.layers.lsdfn_branch: 1x1 reduction + ReLU, then LS-DFN (DeepLab v2 and R-FCN)."""
import torch

from zoo.layers import LSDFNBranch
from zoo.ops.lsdfn import LSDFN

ARGS = {"out_channels": 6, "reduce_channels": 16, "kernel_size": 3, "samples_per_side": 3, "sample_stride": 2}


def test_shape_and_keys():
    branch = LSDFNBranch(32, **ARGS)
    assert isinstance(branch.lsdfn, LSDFN) and branch.out_channels == 6 and branch.reduce.out_channels == 16
    assert branch(torch.randn(2, 32, 9, 7)).shape == (2, 6, 9, 7)
    assert {k.split(".")[0] for k in branch.state_dict()} == {"reduce", "lsdfn"}


def test_is_the_lsdfn_of_the_rectified_reduction():
    branch = LSDFNBranch(8, **ARGS).eval()
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(branch(x), branch.lsdfn(torch.relu(branch.reduce(x))))


def test_builds_on_meta():
    with torch.device("meta"):
        assert LSDFNBranch(2048, **ARGS)(torch.empty(1, 2048, 4, 4)).shape == (1, 6, 4, 4)
