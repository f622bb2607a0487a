"""hmorimitsu/ptlflow FlowNetS / FlowNetC checkpoints -> zoo ``flownets`` / ``flownetc``.

Read from hmorimitsu/ptlflow@e9cf9bcedd06cba2abe94d6bddfb2ed4f91ac3a2 (its files quoted here are those
of ptlflow 0.4.2 on PyPI, whose FlowNetS / FlowNetC ``state_dict()`` keys were listed to check this).
ptlflow's ``things`` checkpoints (``flownets-things-98cde14d.ckpt``, ``flownetc-things-cc8ac7fd.ckpt``) are
NVIDIA flownet2-pytorch's FlowNet2-S / FlowNet2-C (``docs/source/models/checkpoint_list.csv``) saved as
PyTorch Lightning checkpoints. ``ptlflow.restore_model`` takes ``ckpt["state_dict"]`` and loads it
strictly into ptlflow's ``FlowNetS`` / ``FlowNetC`` (``ptlflow/__init__.py``), whose modules keep
flownet2-pytorch's names with no prefix: ``conv1.0`` ... ``conv6_1.0`` (and ``conv_redir.0``),
``deconv{2..5}.0`` and ``predict_flow{2..6}`` with biases, ``upsampled_flow{l}_to_{l-1}`` with a bias
in FlowNetC only (``ptlflow/models/flownet/{flownets,flownetc,submodules}.py``; loss weights and
torchmetrics states are not in the state dict). That is the ``flownet2`` layout, so this converter
unwraps the checkpoint, refuses a ``div_flow`` other than 20 in its ``hyper_parameters`` (when the
whole checkpoint is given: zoo's download path hands converters the state dict only) and delegates to
:func:`zoo.converters.flownet2.convert`; the target is built with :func:`model_args`:
``flownets(deconv_bias=True, predict_bias=True)`` or ``flownetc(..., upsample_bias=True)``.
Correlation: ptlflow's ``correlate`` is ``spatial_correlation_sample(kernel_size=1, patch_size=21,
dilation_patch=2)`` divided by C, zoo's default ``corr_normalize=True``.

Reading: besides ``state_dict`` a Lightning checkpoint holds ``epoch``, ``global_step``,
``pytorch-lightning_version``, ``loops``, ``callbacks``, ``optimizer_states``, ``lr_schedulers``,
``hparams_name`` and ``hyper_parameters`` (a plain dict of the constructor's numbers, strings and
booleans for these models), all of which ``torch.load(weights_only=True)`` accepts; ptlflow itself
reads these files with ``torch.hub.load_state_dict_from_url(..., check_hash=True,
weights_only=True)``. A file that needed more would be refused by zoo's reader, never unpickled.

Inputs (the registry's ``ptlflow-flow`` preset, ``{mean: image, channel_order: rgb, multiple: 64}``):
ptlflow feeds BGR frames in [0, 1], subtracts each frame's per-channel spatial mean (no std) and flips
to RGB, so the network sees RGB minus each frame's own mean; zoo feeds RGB in [0, 1], so the preset
subtracts per-frame means without a flip. ptlflow then resizes the pair bilinearly
(align_corners=True) to multiples of 64 and resizes the flow back; zoo's transforms pad (replicate)
bottom/right instead, because the postprocess (one per entry) crops. Both agree exactly when H and W
are multiples of 64; for other sizes ``model({"images": bgr_pair})`` runs ptlflow's resize path
(:mod:`zoo.models.flownet`). The eval output ``div_flow * upsample_x4(flow2)`` is ptlflow's.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from zoo.converters import flownet2
from zoo.errors import StateDictMismatchError

__all__ = ["convert", "model_args"]

model_args = flownet2.model_args


def convert(checkpoint: Mapping) -> dict[str, Tensor]:
    """Map a ptlflow FlowNetS / FlowNetC Lightning checkpoint (or its ``state_dict``) to zoo's layout."""
    hparams = checkpoint.get("hyper_parameters")
    div_flow = hparams.get("div_flow") if isinstance(hparams, Mapping) else None
    if div_flow is not None and float(div_flow) != 20.0:
        raise StateDictMismatchError(f"the ptlflow checkpoint was trained with div_flow={div_flow}, not the "
                                     "20 of ptlflow's FlowNetS / FlowNetC")
    return flownet2.convert(checkpoint)
