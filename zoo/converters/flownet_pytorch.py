"""ClementPinard/FlowNetPytorch FlowNetS / FlowNetC checkpoints -> zoo ``flownets`` / ``flownetc``.

FlowNetPytorch saves ``{"arch", "state_dict", "div_flow", "best_EPE"}`` (e.g. ``flownets_EPE1.951.pth``,
``flownetc_EPE1.766.pth``). zoo's FlowNet keeps its module names (``conv1.0.weight``,
``conv_redir.0.*``, ``deconv5.0.weight``, ``predict_flow6.weight``, ``upsampled_flow6_to_5.weight``), so
the keys map 1:1; the converter unwraps the checkpoint dict, strips a DataParallel ``module.``
prefix, and rejects anything that is not a FlowNetS / FlowNetC state dict.

Build the target with the default arguments (``batch_norm=True`` for the ``*_bn`` checkpoints, whose
BatchNorm tensors sit at ``convX.1.*``). Inputs: FlowNetPytorch trained on RGB frames / 255 minus a
fixed mean (0.45, 0.432, 0.411) (``main.py``); the registry's ``optical-flow`` transforms take
``mean: [0.45, 0.432, 0.411]`` for these weights (per-pair means work too).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters import checkpoint_tensors
from zoo.errors import StateDictMismatchError

__all__ = ["convert", "unwrap"]

_KEY = re.compile(
    r"^(conv(1|2|3|3_1|4|4_1|5|5_1|6|6_1|_redir)\.[01]\.(weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|deconv[2-5]\.0\.(weight|bias)|predict_flow[2-6]\.(weight|bias)|upsampled_flow[3-6]_to_[2-5]\.(weight|bias))$"
)


def unwrap(state_dict: Mapping, source: str) -> dict[str, Tensor]:
    """The tensors of a checkpoint (``state_dict`` / ``model`` entry or a bare dict), ``module.`` stripped."""
    out = checkpoint_tensors(state_dict)
    for key, value in out.items():
        if not isinstance(value, Tensor):
            raise StateDictMismatchError(f"not a {source} state dict: {key!r} is a {type(value).__name__}, not a tensor")
    return out


def check_layout(out: Mapping[str, Tensor], source: str) -> None:
    """Raise unless ``out`` holds FlowNet keys only, with the encoder, decoder and predictors present."""
    unknown = [k for k in out if not _KEY.match(k)]
    if unknown:
        raise StateDictMismatchError(f"not a {source} FlowNetS/FlowNetC state dict: unexpected keys {unknown[:5]}")
    for needed in ("conv1.0.weight", "conv6_1.0.weight", "deconv2.0.weight", "predict_flow2.weight"):
        if needed not in out:
            raise StateDictMismatchError(f"not a {source} FlowNetS/FlowNetC state dict: {needed!r} is missing")


def convert(state_dict: Mapping, *, div_flow: float = 20.0) -> dict[str, Tensor]:
    """Map a FlowNetPytorch checkpoint (or its inner state dict) to zoo's ``flownets`` / ``flownetc``.

    A checkpoint whose ``div_flow`` differs from ``div_flow`` is refused: build the model with the
    checkpoint's value (``create(..., div_flow=X)``) and pass the same value here.
    """
    ckpt_div = state_dict.get("div_flow") if isinstance(state_dict, Mapping) else None
    if ckpt_div is not None and float(ckpt_div) != float(div_flow):
        raise StateDictMismatchError(
            f"the checkpoint was trained with div_flow={ckpt_div}; build the model with div_flow={ckpt_div} "
            f"and call convert(..., div_flow={ckpt_div})"
        )
    out = unwrap(state_dict, "FlowNetPytorch")
    check_layout(out, "FlowNetPytorch")
    return out
