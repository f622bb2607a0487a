"""timm tf_efficientnet_cc_* -> zoo efficientnet_cc: strict load and equal outputs (needs timm; skipped without)."""
import pytest
import torch

from zoo.converters import get_converter
from zoo.converters.timm_efficientnet_cc import convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.efficientnet_cc import efficientnet_cc


def test_key_mapping():
    assert convert_key("blocks.5.2.routing_fn.weight") == "blocks.5.2.routing.fc.weight"
    assert convert_key("module.blocks.4.0.conv_dw.weight") == "blocks.4.0.conv_dw.weight"
    assert convert_key("bn2.num_batches_tracked") == "bn2.num_batches_tracked"
    assert convert_key("blocks.0.0.se.conv_reduce.bias") == "blocks.0.0.se.conv_reduce.bias"
    assert convert_key("head.fc.weight") is None and convert_key("blocks.1.0.conv_pw.bias") is None


def test_errors():
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({"conv_stem.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="classifier.weight"):
        convert({"conv_stem.weight": torch.zeros(1), "blocks.4.0.routing_fn.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="routing_fn"):
        convert({"conv_stem.weight": torch.zeros(1), "classifier.weight": torch.zeros(1)})


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.split(".")[-2].startswith("bn"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("weight")
                        else torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    # running statistics: calibrated on random images (momentum 1), so that activations stay O(1) through
    # the depth and the output depends on the input, then perturbed
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(torch.randn(b.shape, generator=g) * 0.05)
            elif name.endswith("running_var"):
                b.mul_(torch.rand(b.shape, generator=g) * 0.2 + 0.9)
    model.eval()


@pytest.mark.parametrize("name,variant,experts,shape", [
    ("tf_efficientnet_cc_b0_4e", "b0", 4, (2, 3, 64, 64)),
    ("tf_efficientnet_cc_b0_8e", "b0", 8, (1, 3, 45, 62)),  # odd / non-square: asymmetric TF-SAME padding
])
def test_converted_model_matches_timm(name, variant, experts, shape):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    _randomise(ref, seed=1)
    src = ref.state_dict()
    out = get_converter("timm-efficientnet-cc")(src) if _registered() else convert(src)
    model = efficientnet_cc(variant=variant, num_experts=experts).eval()
    model.load_state_dict(out, strict=True)
    assert all(out[convert_key(k)] is v for k, v in src.items())  # tensors pass through
    x = torch.randn(*shape)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert (theirs - theirs.mean(0)).abs().max() > 0.1 if shape[0] > 1 else theirs.std() > 0.1  # not degenerate
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    # the PyTorch-padded variant (tf_same_padding=False) is a different function on strided layers
    model_pt = efficientnet_cc(variant=variant, num_experts=experts, tf_same_padding=False).eval()
    model_pt.load_state_dict(out, strict=True)
    with torch.no_grad():
        assert not torch.allclose(model_pt(x), theirs, atol=1e-3)


def _registered() -> bool:
    from zoo.converters import list_converters
    return "timm-efficientnet-cc" in list_converters()
