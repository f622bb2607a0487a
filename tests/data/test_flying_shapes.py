"""FlyingShapes: shapes, determinism, batch independence and exactness of the ground-truth flow."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.data import FlyingShapes

SIZE = (64, 96)


def _ds(**kw) -> FlyingShapes:
    return FlyingShapes(length=100, size=SIZE, seed=3, textures="procedural", **kw)


def _warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (frame 2) at x + flow(x) (bilinear, pixel centres at integers)."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = (xs + flow[:, 0] + 0.5) * 2 / w - 1
    gy = (ys + flow[:, 1] + 0.5) * 2 / h - 1
    return F.grid_sample(image, torch.stack([gx, gy], -1), mode="bilinear", align_corners=False)


def test_sample_layout():
    s = _ds()[0]
    assert s["image1"].shape == s["image2"].shape == (3, *SIZE) and s["image1"].dtype == torch.float32
    assert s["flow"].shape == (2, *SIZE) and s["valid"].shape == s["visible"].shape == SIZE
    assert 0 <= float(s["image1"].min()) and float(s["image1"].max()) <= 1
    assert bool(s["valid"].all()) and s["flow"].abs().max() > 0.1


def test_deterministic_per_seed_and_index_and_batch_independent():
    a, b = _ds(), _ds()
    x, y = a[5], b[5]
    for k in x:
        assert torch.equal(x[k], y[k]), k
    assert not torch.equal(a[5]["image1"], a[6]["image1"])
    other_seed = FlyingShapes(length=100, size=SIZE, seed=4, textures="procedural")[5]
    assert not torch.equal(other_seed["flow"], x["flow"])
    batch = a.__getitems__([7, 5, 9])
    for k in x:
        assert torch.equal(batch[1][k], x[k]), k


def test_dataloader_workers_reproduce_batches():
    ds = _ds()
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, shuffle=False)
    first = next(iter(loader))
    direct = ds.generate([0, 1, 2])
    assert torch.equal(first["flow"], direct["flow"]) and torch.equal(first["image2"], direct["image2"])


def test_warping_frame2_by_flow_reconstructs_frame1_on_visible_pixels():
    batch = _ds().generate(list(range(6)))
    vis = batch["visible"]
    assert 0.3 < float(vis.float().mean()) < 1.0   # objects occlude and leave the frame
    err = (_warp(batch["image2"], batch["flow"]) - batch["image1"]).abs().mean(1)
    zero = (_warp(batch["image2"], torch.zeros_like(batch["flow"])) - batch["image1"]).abs().mean(1)
    assert float(err[vis].median()) < 0.01
    assert float(err[vis].mean()) < 0.03
    assert float(err[vis].mean()) < 0.25 * float(zero[vis].mean())
    wrong = (_warp(batch["image2"], -batch["flow"]) - batch["image1"]).abs().mean(1)
    assert float(wrong[vis].mean()) > 3 * float(err[vis].mean())


def test_pure_translation_has_constant_flow():
    ds = FlyingShapes(length=10, size=SIZE, seed=1, objects=(0, 0), background_motion=(0.0, 0.0, 0.1),
                      textures="procedural")
    for i in range(3):
        s = ds[i]
        flow = s["flow"].flatten(1)
        assert torch.allclose(flow, flow[:, :1].expand_as(flow), atol=1e-4)
        assert float(flow[:, 0].norm()) > 0.01
        # everything that stays in the frame is visible; a frame-1 pixel is visible iff it lands inside
        tx = torch.arange(SIZE[1]) + flow[0, 0]
        inside_cols = ((tx.round() >= 0) & (tx.round() < SIZE[1])).sum()
        ty = torch.arange(SIZE[0]) + flow[1, 0]
        inside_rows = ((ty.round() >= 0) & (ty.round() < SIZE[0])).sum()
        assert int(s["visible"].sum()) == int(inside_cols * inside_rows)


def test_integer_translation_is_reproduced_exactly():
    # background only, motion forced to an integer shift: frame 2 = frame 1 shifted
    ds = FlyingShapes(length=10, size=SIZE, seed=2, objects=(0, 0), background_motion=(0.0, 0.0, 0.0),
                      textures="procedural")
    params, motions = ds._params(0)
    motions[0] = [[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]
    ds._params = lambda index: (params, motions)  # type: ignore[method-assign]
    s = ds[0]
    assert torch.equal(s["flow"][0], torch.full(SIZE, 3.0)) and torch.equal(s["flow"][1], torch.full(SIZE, -2.0))
    # frame-1 pixel (x, y) moves to (x + 3, y - 2)
    assert torch.allclose(s["image2"][:, :-2, 3:], s["image1"][:, 2:, :-3], atol=1e-5)
    assert not torch.allclose(s["image2"][:, 2:, 3:], s["image1"][:, :-2, :-3], atol=1e-2)


def test_bad_arguments():
    with pytest.raises(IndexError):
        _ds()[100]
    with pytest.raises(ValueError):
        FlyingShapes(length=0, textures="procedural")


def test_spec_options_reach_the_constructor_and_widen_the_motion():
    from zoo.data import dataset_from_spec
    wide = dataset_from_spec("flying-shapes:50?object_motion=0.15,0.1,0.4&objects=3,3&textures=procedural",
                             size=SIZE, seed=3)
    assert (len(wide), wide.object_motion, wide.objects) == (50, (0.15, 0.1, 0.4), (3, 3))
    narrow = dataset_from_spec("flying-shapes:50?object_motion=0.15,0.1,0.05&objects=3,3&textures=procedural",
                               size=SIZE, seed=3)
    p99 = [d.generate(range(16))["flow"].norm(dim=1).flatten().quantile(0.99) for d in (wide, narrow)]
    assert p99[0] > 2 * p99[1]


@pytest.mark.parametrize("spec, needle", [("flying-shapes?object_speed=1", "object_motion"),
                                          ("flying-shapes?objects", "KEY=VALUE"),
                                          ("flying-shapes?seed=4", "own arguments"),
                                          ("flyingchairs:/x?objects=1,2", "only procedural")])
def test_bad_spec_options_name_the_option_and_the_choices(spec, needle):
    from zoo.data import dataset_from_spec
    with pytest.raises(ValueError, match=needle):
        dataset_from_spec(spec)
