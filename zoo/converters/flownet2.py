"""NVIDIA/flownet2-pytorch FlowNet2-S / FlowNet2-C checkpoints -> zoo ``flownets`` / ``flownetc``.

flownet2-pytorch's ``FlowNet2S`` / ``FlowNet2C`` (``models.py``) subclass ``networks/FlowNetS.py`` /
``FlowNetC.py`` with FlowNetPytorch's module names, but ``networks/submodules.py`` gives the deconv
and predict_flow layers biases, and FlowNetC's flow up-sampling layers have biases too (FlowNetS's do
not). Checkpoints (``FlowNet2-S_checkpoint.pth.tar``, ``FlowNet2-C_checkpoint.pth.tar``) are
``{"epoch", "best_EPE", "state_dict"}``. Build the target with

- FlowNet2-S: ``flownets(deconv_bias=True, predict_bias=True)``
- FlowNet2-C: ``flownetc(deconv_bias=True, predict_bias=True, upsample_bias=True)``

(:func:`model_args` returns these). Correlation: flownet2's CUDA ``Correlation(pad_size=20,
kernel_size=1, max_displacement=20, stride1=1, stride2=2)`` divides by ``kernel_size**2 * C`` = C,
which is zoo's ``corr_normalize=True`` (the default), so outputs do not depend on it; its channel order
(``(dy + r) * 21 + (dx + r)``) is zoo's. The FlowNetC sub-network of a full FlowNet2 / FlowNet2-CS(S)
checkpoint is read with ``submodule="flownetc"``.

Inputs: ``FlowNet2S.forward`` takes RGB frames in [0, 255] (scipy ``imread``), subtracts the per-pair
channel mean over both frames and divides by ``rgb_max`` = 255: the ``optical-flow`` transforms'
default (``mean: pair``). Eval output ``upsample_x4(flow2 * 20)`` is zoo's eval output.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from zoo.converters.flownet_pytorch import check_layout, unwrap
from zoo.errors import StateDictMismatchError

__all__ = ["convert", "model_args"]


def model_args(state_dict: Mapping[str, Tensor]) -> dict[str, object]:
    """Constructor arguments (besides the arch) that a converted flownet2 state dict needs."""
    args: dict[str, object] = {"deconv_bias": True, "predict_bias": True}
    if "upsampled_flow6_to_5.bias" in state_dict:
        args["upsample_bias"] = True
    return args


def convert(state_dict: Mapping, *, submodule: str | None = None) -> dict[str, Tensor]:
    """Map a flownet2-pytorch FlowNet2-S / FlowNet2-C checkpoint (or state dict) to zoo's layout.

    ``submodule``: take the tensors under ``"<submodule>."`` (e.g. ``"flownetc"`` from a FlowNet2
    checkpoint). The FlowNet2-S input layer must have 6 channels (FlowNet2's stacked FlowNetS blocks
    take 12 and are not FlowNetS models).
    """
    sd = unwrap(state_dict, "flownet2-pytorch")
    if submodule is not None:
        prefix = submodule.rstrip(".") + "."
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise StateDictMismatchError(f"the flownet2-pytorch checkpoint has no tensors under {prefix!r}")
    check_layout(sd, "flownet2-pytorch")
    missing = [k for k in ("deconv5.0.bias", "predict_flow6.bias") if k not in sd]
    if missing:
        raise StateDictMismatchError(
            f"not a flownet2-pytorch state dict: {missing} missing (FlowNetPytorch checkpoints have no "
            "deconv / predict biases: use the 'flownet-pytorch' converter)"
        )
    cin = sd["conv1.0.weight"].shape[1]
    if cin not in (3, 6):
        raise StateDictMismatchError(f"conv1 takes {cin} channels: not a FlowNet2-S (6) or FlowNet2-C (3) network")
    return sd
