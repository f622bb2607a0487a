"""FlowNet converters: FlowNetPytorch, flownet2-pytorch, ptlflow and mmflow layouts -> zoo flownets / flownetc.

Each source's state dict is built from a table of its original key names and shapes (random values,
written from the reference code: FlowNetPytorch models/util.py + FlowNet{S,C}.py, flownet2-pytorch
networks/submodules.py + FlowNet{S,C}.py, ptlflow models/flownet/{flownets,flownetc,submodules}.py,
mmflow configs/_base_/models/flownet{s,c}.py), converted and
loaded strictly. Outputs are compared with a functional forward pass that reads the ORIGINAL key names
in the original layer order, and FlowNetC's correlation with spatial-correlation-sampler (the op
FlowNetPytorch calls) when it is installed.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.converters import flownet2, flownet_pytorch, mmflow_flownet, ptlflow_flownet
from zoo.errors import StateDictMismatchError
from zoo.models.flownet import flownetc, flownets
from zoo.ops.correlation import correlation

W = 0.25  # width used for the random state dicts (the tables scale every conv width)


def ch(n: int) -> int:
    return max(1, int(round(n * W)))


def _encoder(corr: bool) -> list[tuple[str, int, int, int, int]]:
    """(FlowNetPytorch name, cin, cout, kernel, stride) in forward order."""
    first = [("conv1", 3 if corr else 6, ch(64), 7, 2), ("conv2", ch(64), ch(128), 5, 2), ("conv3", ch(128), ch(256), 5, 2)]
    mid = [("conv_redir", ch(256), ch(32), 1, 1), ("conv3_1", ch(32) + 441, ch(256), 3, 1)] if corr else [
        ("conv3_1", ch(256), ch(256), 3, 1)]
    rest = [("conv4", ch(256), ch(512), 3, 2), ("conv4_1", ch(512), ch(512), 3, 1), ("conv5", ch(512), ch(512), 3, 2),
            ("conv5_1", ch(512), ch(512), 3, 1), ("conv6", ch(512), ch(1024), 3, 2), ("conv6_1", ch(1024), ch(1024), 3, 1)]
    return first + mid + rest


# decoder: level -> (predict in-channels, deconv out-channels) ; in-channels of deconv{l-1} = predict in
def _dec() -> dict[int, tuple[int, int | None]]:
    return {6: (ch(1024), ch(512)), 5: (2 * ch(512) + 2, ch(256)), 4: (ch(512) + ch(256) + 2, ch(128)),
            3: (ch(256) + ch(128) + 2, ch(64)), 2: (ch(128) + ch(64) + 2, None)}


def fnp_table(corr: bool, biases: bool = False, upsample_bias: bool = False) -> dict[str, tuple[int, ...]]:
    """FlowNetPytorch names and shapes (``biases``: flownet2-pytorch's deconv / predict biases)."""
    t: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, k, _ in _encoder(corr):
        t[f"{name}.0.weight"], t[f"{name}.0.bias"] = (cout, cin, k, k), (cout,)
    for level, (cin, dout) in _dec().items():
        t[f"predict_flow{level}.weight"] = (2, cin, 3, 3)
        if biases:
            t[f"predict_flow{level}.bias"] = (2,)
        if dout is not None:
            t[f"deconv{level - 1}.0.weight"] = (cin, dout, 4, 4)
            if biases:
                t[f"deconv{level - 1}.0.bias"] = (dout,)
            t[f"upsampled_flow{level}_to_{level - 1}.weight"] = (2, 2, 4, 4)
            if upsample_bias:
                t[f"upsampled_flow{level}_to_{level - 1}.bias"] = (2,)
    return t


def ptlflow_table(corr: bool) -> dict[str, tuple[int, ...]]:
    """ptlflow's FlowNetS / FlowNetC names and shapes: flownet2-pytorch's (deconv and predict biases; flow
    up-sampling biases in FlowNetC only; hmorimitsu/ptlflow@e9cf9bcedd06cba2abe94d6bddfb2ed4f91ac3a2
    ptlflow/models/flownet/flownets.py L42-69, flownetc.py L41-71, submodules.py L15-79): 42 / 48 tensors."""
    return fnp_table(corr, biases=True, upsample_bias=corr)


def ptlflow_checkpoint(state_dict: dict, **hyper_parameters) -> dict:
    """A PyTorch Lightning checkpoint as ``Trainer.save_checkpoint`` writes it for ptlflow's FlowNet (top-level
    keys and the constructor's hyper_parameters; ptlflow.restore_model reads ``state_dict`` and
    ``hyper_parameters`` only)."""
    hparams = {"output_stride": 64, "lr": None, "wdecay": None, "warm_start": False,
               "metric_interpolate_pred_to_target_size": False, "div_flow": 20.0, "input_channels": 6,
               "batch_norm": False, "loss_start_scale": 4, "loss_num_scales": 5, "loss_base_weight": 0.32,
               "loss_norm": "L2", **hyper_parameters}
    return {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6", "state_dict": state_dict,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 0}}}},
            "callbacks": {}, "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
            "hyper_parameters": hparams}


def mmflow_table(corr: bool) -> dict[str, tuple[int, ...]]:
    """mmflow names and shapes (deconv_bias, pred_bias; upsample_bias for FlowNetC only)."""
    t: dict[str, tuple[int, ...]] = {}
    enc = _encoder(corr)
    if corr:
        where = [("encoder", 0, 0), ("encoder", 1, 0), ("encoder", 2, 0), None, ("corr_encoder", 0, 0),
                 ("corr_encoder", 1, 0), ("corr_encoder", 1, 1), ("corr_encoder", 2, 0), ("corr_encoder", 2, 1),
                 ("corr_encoder", 3, 0), ("corr_encoder", 3, 1)]
    else:
        where = [("encoder", 0, 0), ("encoder", 1, 0), ("encoder", 2, 0), ("encoder", 2, 1), ("encoder", 3, 0),
                 ("encoder", 3, 1), ("encoder", 4, 0), ("encoder", 4, 1), ("encoder", 5, 0), ("encoder", 5, 1)]
    for (name, cin, cout, k, _), w in zip(enc, where):
        prefix = "corr_encoder.conv_redir.conv" if w is None else f"{w[0]}.layers.{w[1]}.layers.{w[2]}.conv"
        t[f"{prefix}.weight"], t[f"{prefix}.bias"] = (cout, cin, k, k), (cout,)
    for level, (cin, dout) in _dec().items():
        base = f"decoder.decoders.level{level}"
        t[f"{base}.pred_out.weight"], t[f"{base}.pred_out.bias"] = (2, cin, 3, 3), (2,)
        if dout is not None:
            t[f"{base}.deconv_out.deconvs.0.weight"] = (cin, dout, 4, 4)
            t[f"{base}.deconv_out.deconvs.0.bias"] = (dout,)
            t[f"{base}.upsample_pred.deconvs.0.weight"] = (2, 2, 4, 4)
            if corr:
                t[f"{base}.upsample_pred.deconvs.0.bias"] = (2,)
    return t


def random_state(table: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * (0.5 / (torch.Size(shape[1:]).numel() ** 0.5 or 1))
            for k, shape in table.items()}


# --------------------------------------------------------------------------------------- reference
def reference_forward(sd, conv_names, dec_names, corr_fn=None, x=None):
    """Multi-scale flows (flow2..flow6) computed from ``sd`` by its ORIGINAL names, in the original order.

    ``conv_names``: original conv prefixes in FlowNetPytorch order (see ``_encoder``); ``dec_names``:
    level -> (predict, deconv, upsample) original prefixes.
    """
    act = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    specs = dict(zip([e[0] for e in _encoder(corr_fn is not None)], _encoder(corr_fn is not None)))

    def conv(name, t):
        prefix = conv_names[name]
        return act(F.conv2d(t, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"), specs[name][4], specs[name][3] // 2))

    if corr_fn is None:
        c2 = conv("conv2", conv("conv1", x))
        c3 = conv("conv3_1", conv("conv3", c2))
    else:
        a2 = conv("conv2", conv("conv1", x[:, :3]))
        a3 = conv("conv3", a2)
        b3 = conv("conv3", conv("conv2", conv("conv1", x[:, 3:])))
        c2 = a2
        c3 = conv("conv3_1", torch.cat([conv("conv_redir", a3), act(corr_fn(a3, b3))], 1))
    c4 = conv("conv4_1", conv("conv4", c3))
    c5 = conv("conv5_1", conv("conv5", c4))
    feat = conv("conv6_1", conv("conv6", c5))
    skips, flows = {5: c5, 4: c4, 3: c3, 2: c2}, {}
    for level in (6, 5, 4, 3, 2):
        pred, deconv, up = dec_names[level]
        flows[level] = F.conv2d(feat, sd[f"{pred}.weight"], sd.get(f"{pred}.bias"), 1, 1)
        if level > 2:
            up_flow = F.conv_transpose2d(flows[level], sd[f"{up}.weight"], sd.get(f"{up}.bias"), 2, 1)
            up_feat = act(F.conv_transpose2d(feat, sd[f"{deconv}.weight"], sd.get(f"{deconv}.bias"), 2, 1))
            feat = torch.cat([skips[level - 1], up_feat, up_flow], 1)
    return tuple(flows[level] for level in (2, 3, 4, 5, 6))


def fnp_names(corr: bool):
    conv_names = {e[0]: f"{e[0]}.0" for e in _encoder(corr)}
    dec = {level: (f"predict_flow{level}", f"deconv{level - 1}.0", f"upsampled_flow{level}_to_{level - 1}")
           for level in (6, 5, 4, 3, 2)}
    return conv_names, dec


def mmflow_names(corr: bool):
    table = mmflow_table(corr)
    conv_prefixes = [k[: -len(".weight")] for k in table if k.endswith(".conv.weight")]
    conv_names = dict(zip([e[0] for e in _encoder(corr)], conv_prefixes))
    dec = {level: (f"decoder.decoders.level{level}.pred_out", f"decoder.decoders.level{level}.deconv_out.deconvs.0",
                   f"decoder.decoders.level{level}.upsample_pred.deconvs.0") for level in (6, 5, 4, 3, 2)}
    return conv_names, dec


def _compare(model, sd_original, names, corr_fn=None, seed=1):
    x = torch.randn(1, 6, 64, 128, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = model.train().multiscale(x)
        ref = reference_forward(sd_original, *names, corr_fn=corr_fn, x=x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _load(fn, converted, **args):
    model = fn(width=W, **args)
    model.load_state_dict(converted, strict=True)
    return model


# --------------------------------------------------------------------------------------- FlowNetPytorch
@pytest.mark.parametrize("corr", [False, True])
def test_flownet_pytorch_checkpoint(corr):
    sd = random_state(fnp_table(corr))
    ckpt = {"arch": "flownetc" if corr else "flownets", "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "div_flow": 20, "best_EPE": 1.9}
    out = flownet_pytorch.convert(ckpt)
    assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)
    model = _load(flownetc if corr else flownets, out)
    corr_fn = (lambda a, b: correlation(a, b, 20, 2, 1, True)) if corr else None
    _compare(model, sd, fnp_names(corr), corr_fn)


def test_flownet_pytorch_batchnorm_checkpoint():
    sd = flownets(width=W, batch_norm=True).state_dict()  # BN layout: conv without bias, convX.1.* BN
    assert "conv1.0.bias" not in sd and "conv1.1.running_var" in sd
    flownets(width=W, batch_norm=True).load_state_dict(flownet_pytorch.convert({"state_dict": sd}), strict=True)


def test_flownet_pytorch_rejects_other_layouts():
    sd = random_state(fnp_table(False))
    with pytest.raises(StateDictMismatchError, match="div_flow"):
        flownet_pytorch.convert({"state_dict": sd, "div_flow": 10})
    with pytest.raises(StateDictMismatchError, match="unexpected"):
        flownet_pytorch.convert(random_state(mmflow_table(False)))
    with pytest.raises(StateDictMismatchError, match="missing"):
        flownet_pytorch.convert({k: v for k, v in sd.items() if not k.startswith("predict_flow2")})




def test_flownetc_correlation_matches_spatial_correlation_sampler():
    """FlowNetPytorch's correlate(): spatial_correlation_sample(k=1, patch 21, dilation_patch 2) / C."""
    sampler = pytest.importorskip("spatial_correlation_sampler")
    sd = random_state(fnp_table(True), seed=3)
    model = _load(flownetc, flownet_pytorch.convert(sd))

    def fnp_correlate(a, b):
        out = sampler.spatial_correlation_sample(a, b, kernel_size=1, patch_size=21, stride=1, padding=0,
                                                 dilation_patch=2)
        n, ph, pw, h, w = out.shape
        return out.reshape(n, ph * pw, h, w) / a.shape[1]

    _compare(model, sd, fnp_names(True), fnp_correlate, seed=4)


# --------------------------------------------------------------------------------------- flownet2
@pytest.mark.parametrize("corr", [False, True])
def test_flownet2_checkpoint(corr):
    sd = random_state(fnp_table(corr, biases=True, upsample_bias=corr), seed=5)
    out = flownet2.convert({"epoch": 10, "best_EPE": 2.0, "state_dict": sd})
    args = flownet2.model_args(out)
    assert args == ({"deconv_bias": True, "predict_bias": True, "upsample_bias": True} if corr
                    else {"deconv_bias": True, "predict_bias": True})
    model = _load(flownetc if corr else flownets, out, **args)
    corr_fn = (lambda a, b: correlation(a, b, 20, 2, 1, True)) if corr else None  # k*k*C = C normalisation
    _compare(model, sd, fnp_names(corr), corr_fn)


def test_flownet2_submodule_and_errors():
    sd = random_state(fnp_table(True, biases=True, upsample_bias=True))
    full = {f"flownetc.{k}": v for k, v in sd.items()}
    full["flownets_1.conv1.0.weight"] = torch.zeros(64, 12, 7, 7)
    out = flownet2.convert({"state_dict": full}, submodule="flownetc")
    assert set(out) == set(sd)
    with pytest.raises(StateDictMismatchError, match="flownet-pytorch"):
        flownet2.convert(random_state(fnp_table(False)))
    with pytest.raises(StateDictMismatchError, match="under"):
        flownet2.convert(full, submodule="flownetsd")


# --------------------------------------------------------------------------------------- ptlflow
@pytest.mark.parametrize("corr", [False, True])
def test_ptlflow_checkpoint_through_the_weights_only_reader(corr, tmp_path):
    from zoo.upstream import read_original

    sd = random_state(ptlflow_table(corr), seed=9)
    assert len(sd) == (48 if corr else 42)  # ptlflow 0.4.2's FlowNetC / FlowNetS state_dict() sizes
    path = tmp_path / ("flownetc-things-cc8ac7fd.ckpt" if corr else "flownets-things-98cde14d.ckpt")
    torch.save(ptlflow_checkpoint(sd), path)
    read = read_original(path, path.name)  # torch.load(weights_only=True), then the state_dict entry
    for original in (read, ptlflow_checkpoint(sd)):
        out = ptlflow_flownet.convert(original)
        assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)
    args = ptlflow_flownet.model_args(out)
    assert args == {"deconv_bias": True, "predict_bias": True, **({"upsample_bias": True} if corr else {})}
    model = _load(flownetc if corr else flownets, out, **args)
    corr_fn = (lambda a, b: correlation(a, b, 20, 2, 1, True)) if corr else None  # ptlflow's correlate(): / C
    _compare(model, sd, fnp_names(corr), corr_fn)


def test_ptlflow_rejects_other_checkpoints():
    sd = random_state(ptlflow_table(False))
    with pytest.raises(StateDictMismatchError, match="div_flow"):
        ptlflow_flownet.convert(ptlflow_checkpoint(sd, div_flow=1.0))
    with pytest.raises(StateDictMismatchError, match="flownet-pytorch"):
        ptlflow_flownet.convert(ptlflow_checkpoint(random_state(fnp_table(False))))


# --------------------------------------------------------------------------------------- mmflow
@pytest.mark.parametrize("corr", [False, True])
def test_mmflow_checkpoint(corr):
    sd = random_state(mmflow_table(corr), seed=7)
    out = mmflow_flownet.convert({"meta": {"epoch": 1}, "state_dict": sd})
    args = mmflow_flownet.model_args(sd)
    expected = {"deconv_bias": True, "predict_bias": True}
    if corr:
        expected.update(upsample_bias=True, corr_normalize=False)
    assert args == expected
    model = _load(flownetc if corr else flownets, out, **args)
    # mmflow's CorrEncoder(scaled=False): the raw sum over channels, no division by C
    corr_fn = (lambda a, b: correlation(a, b, 20, 2, 1, False)) if corr else None
    _compare(model, sd, mmflow_names(corr), corr_fn)


def test_mmflow_rejects_other_layouts():
    with pytest.raises(StateDictMismatchError, match="unexpected"):
        mmflow_flownet.convert(random_state(fnp_table(False)))
    sd = random_state(mmflow_table(False))
    sd["decoder.decoders.level2.deconv_out.deconvs.0.weight"] = torch.zeros(1)
    with pytest.raises(StateDictMismatchError):
        mmflow_flownet.convert(sd)

