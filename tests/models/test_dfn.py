"""DFN video prediction (zoo.models.dfn): shapes, range, autoregression, loss, meta, parameter count, export;
and its plain twin ConvVideo (same network, a direct sigmoid frame instead of the dynamic filters)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import InputError
from zoo.models.dfn import ConvVideo, DFNVideo, conv_video, dfn_loss, dfn_video


def _frames(b=1, t=10, seed=0):
    return torch.rand(b, t, 1, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_shapes_train_and_eval_and_range():
    torch.manual_seed(0)
    model = dfn_video(width=4)
    x = _frames()
    model.train()
    y = model(x)
    assert y.shape == (1, 10, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        y2 = model(x)
    assert y2.shape == (1, 10, 1, 64, 64)
    torch.testing.assert_close(y, y2)  # no BN / dropout: same function in both modes
    # softmax filters: each prediction is a convex combination (with zero padding) of [0, 1] pixels
    assert float(y2.min()) >= 0.0 and float(y2.max()) <= 1.0 + 1e-6


def test_first_prediction_is_softmax_filter_of_last_frame_after_warmup():
    torch.manual_seed(0)
    model = dfn_video(width=4, out_frames=2).eval()
    x = _frames(2, seed=3)
    with torch.no_grad():
        hidden = x.new_zeros(2, 16, 32, 32)
        for t in range(9):
            _, hidden, _ = model.step(x[:, t], hidden)
        first, hidden, logits = model.step(x[:, 9], hidden)
        second, _, _ = model.step(first, hidden)  # autoregressive: the prediction is fed back
        out = model(x)
    # independent check of the filtering: unfold-multiply-sum with softmax over the 81 taps
    patches = F.unfold(x[:, 9], 9, padding=4).view(2, 81, 64, 64)
    manual = (patches * logits.softmax(1)).sum(1, keepdim=True)
    torch.testing.assert_close(first, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:, 0], first)
    torch.testing.assert_close(out[:, 1], second)


def test_hidden_state_carries_history():
    torch.manual_seed(0)
    model = dfn_video(width=4, out_frames=1).eval()
    a, b = _frames(seed=1), _frames(seed=2)
    b[:, -1] = a[:, -1]  # same last frame, different history
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b))


def test_loss_is_bce_per_image():
    pred = torch.full((2, 3, 1, 4, 4), 0.25)
    target = torch.zeros(2, 3, 1, 4, 4)
    target[..., 0, 0] = 1.0
    # per image: 15 pixels * -log(0.75) + 1 pixel * -log(0.25)
    expected = 15 * -torch.log(torch.tensor(0.75)) - torch.log(torch.tensor(0.25))
    torch.testing.assert_close(dfn_loss(pred, target), expected)
    with pytest.raises(ValueError):
        dfn_loss(pred, target[:, :2])


def test_loss_backward_reaches_filter_generator():
    torch.manual_seed(0)
    model = dfn_video(width=4, out_frames=2)
    x = _frames()
    loss = dfn_loss(model(x), _frames(t=2, seed=5))
    loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.hidden[0].weight.grad.abs().sum() > 0


def test_bad_inputs():
    model = dfn_video(width=4)
    with pytest.raises(InputError):
        model(torch.rand(1, 9, 1, 64, 64))  # wrong number of frames
    with pytest.raises(InputError):
        model(torch.rand(1, 10, 3, 64, 64))
    with pytest.raises(ValueError):
        model(torch.rand(1, 10, 1, 63, 64))
    with pytest.raises(ValueError):
        dfn_video(filter_size=8)


def test_meta_and_parameter_count_matches_reference():
    with torch.device("meta"):
        model = dfn_video()
    assert all(p.is_meta for p in model.parameters())
    # dbbert/dfn models/model_bouncingMnistOriginal.py: 13 convs (3x3 unless noted), bias everywhere:
    # 1-32, 32-32/2, 32-64, 64-64, 64-128, hidden 128-128 x2, 128-64, 64-64, (x2) 64-64, 64-64, 1x1 64-128, 1x1 128-81
    convs = [(1, 32, 3), (32, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 128, 3),
             (128, 64, 3), (64, 64, 3), (64, 64, 3), (64, 64, 3), (64, 128, 1), (128, 81, 1)]
    reference = sum(i * o * k * k + o for i, o, k in convs)
    assert reference == 637361
    assert sum(p.numel() for p in model.parameters()) == reference


def test_export():
    model = DFNVideo(in_frames=3, out_frames=2, width=2).eval()
    x = torch.rand(1, 3, 1, 64, 64)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))


# ------------------------------------------------------------------ the plain twin
def test_twin_shapes_range_and_autoregression():
    torch.manual_seed(0)
    model = conv_video(width=4, out_frames=2).eval()
    x = _frames(2, seed=4)
    with torch.no_grad():
        out = model(x)
        hidden = x.new_zeros(2, 16, 32, 32)
        for t in range(9):
            _, hidden, _ = model.step(x[:, t], hidden)
        first, hidden, none = model.step(x[:, 9], hidden)
        second, _, _ = model.step(first, hidden)
    assert out.shape == (2, 2, 1, 64, 64) and none is None
    assert float(out.min()) > 0.0 and float(out.max()) < 1.0  # a sigmoid
    torch.testing.assert_close(out[:, 0], first)
    torch.testing.assert_close(out[:, 1], second)


def test_twin_is_the_dfn_network_with_another_head():
    dfn, twin = dfn_video(width=16), conv_video(width=16)
    d, c = dict(dfn.named_parameters()), dict(twin.named_parameters())
    shared = set(d) - {"filters.weight", "filters.bias"}
    assert set(c) == shared | {"frame.weight", "frame.bias"}
    assert all(d[k].shape == c[k].shape for k in shared)
    assert c["frame.weight"].shape == (1, 64, 1, 1)
    n_dfn, n_twin = sum(p.numel() for p in d.values()), sum(p.numel() for p in c.values())
    assert n_dfn - n_twin == 80 * (4 * 16 + 1) and n_twin / n_dfn > 0.96  # 157,105 vs 162,305
    # the same features: copy the shared weights and the hidden states agree
    twin.load_state_dict({k: v for k, v in dfn.state_dict().items() if not k.startswith("filters")}, strict=False)
    x, h = torch.rand(1, 1, 16, 16), torch.zeros(1, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(dfn.step(x, h)[1], twin.step(x, h)[1])
    assert isinstance(twin, ConvVideo) and isinstance(twin, DFNVideo)


def test_twin_meta_and_export():
    with torch.device("meta"):
        model = conv_video()
    assert all(p.is_meta for p in model.parameters())
    model = ConvVideo(in_frames=3, out_frames=2, width=2).eval()
    x = torch.rand(1, 3, 1, 64, 64)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))
