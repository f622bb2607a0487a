"""Shapes (segmentation generator), shape geometry on hand-worked points, texture sources."""
from __future__ import annotations

import warnings

import pytest
import torch

from zoo.data import Shapes, dataset_from_spec, textures
from zoo.data.shapes import KINDS, _inside


def _at(kind: int, u: float, v: float, lobes=(0.0, 0.0, 0.0)) -> bool:
    gauge = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])           # pixels = normalised layer coords
    pts = torch.tensor([[[[u, v]]]])
    return bool(_inside(torch.tensor([kind]), gauge, torch.tensor([lobes]), pts)[0, 0, 0])


def test_shape_geometry_hand_worked():
    e, r, t, d, s, ring = (KINDS.index(k) for k in ("ellipse", "rectangle", "triangle", "diamond", "star", "ring"))
    assert _at(e, 0.6, 0.6) and not _at(e, 0.75, 0.75)
    assert _at(r, 0.95, -0.95) and not _at(r, 1.05, 0.0)
    assert _at(d, 0.45, 0.45) and not _at(d, 0.55, 0.55)
    assert _at(t, 0.0, -0.95) and _at(t, 0.0, 0.45) and not _at(t, 0.0, 0.55)   # apex up, base at v = 0.5
    assert _at(s, 0.0, -0.95) and not _at(s, 0.3 * 0.5878, -0.3 * 0.8090)       # tip up; 0.3 between tips
    assert not _at(ring, 0.0, 0.0) and _at(ring, 0.8, 0.0) and not _at(ring, 1.05, 0.0)
    assert _at(0, 50.0, 50.0)                                                   # background: everywhere
    assert not _at(e, 1.15, 0.0) and _at(e, 1.15, 0.0, (0.2, 0.0, torch.pi / 2))  # lobes widen the outline


def test_sample_layout_and_labels():
    ds = Shapes(length=20, size=(48, 64), seed=0, textures="procedural")
    s = ds[3]
    assert s["image"].shape == (3, 48, 64) and s["label"].shape == (48, 64) and s["label"].dtype == torch.int64
    labels = torch.cat([ds[i]["label"].unique() for i in range(10)]).unique()
    assert set(labels.tolist()) <= set(range(len(KINDS))) and len(labels) >= 4
    assert ds.num_classes == 7


def test_deterministic_and_batch_independent():
    a = Shapes(length=20, size=(32, 32), seed=5, textures="procedural")
    b = Shapes(length=20, size=(32, 32), seed=5, textures="procedural")
    assert torch.equal(a[4]["image"], b[4]["image"]) and torch.equal(a[4]["label"], b[4]["label"])
    batch = a.__getitems__([1, 4])
    assert torch.equal(batch[1]["label"], a[4]["label"]) and torch.equal(batch[1]["image"], a[4]["image"])
    assert not torch.equal(a[4]["label"], a[5]["label"])


def test_flat_background_changes_only_background_pixels():
    textured = Shapes(length=6, size=(40, 48), seed=2, textures="procedural")
    flat = Shapes(length=6, size=(40, 48), seed=2, textures="procedural", background="flat")
    for i in (0, 4):
        a, b = textured[i], flat[i]
        assert torch.equal(a["label"], b["label"])
        ground = b["label"] == 0
        assert bool(ground.any()) and bool((~ground).any())
        assert torch.equal(a["image"][:, ~ground], b["image"][:, ~ground])
        colour = b["image"][:, ground]
        assert torch.equal(colour, colour[:, :1].expand_as(colour))          # one grey level per image
    colours = {tuple(flat[i]["image"][:, flat[i]["label"] == 0][:, 0].tolist()) for i in range(6)}
    assert len(colours) == 6                                                 # a new level per image
    batch = flat.__getitems__([0, 4])
    assert torch.equal(batch[1]["image"], flat[4]["image"])
    spec = dataset_from_spec("shapes-flat:3", size=(40, 48), seed=2, textures="procedural")
    assert spec.background == "flat" and len(spec) == 3 and torch.equal(spec[0]["image"], flat[0]["image"])
    with pytest.raises(ValueError, match="background must be"):
        Shapes(length=1, background="plain")


def test_ignore_border_marks_only_boundaries():
    plain = Shapes(length=5, size=(40, 40), seed=1, textures="procedural")[2]["label"]
    bordered = Shapes(length=5, size=(40, 40), seed=1, textures="procedural", ignore_border=True)[2]["label"]
    ignored = bordered == 255
    assert bool(ignored.any())
    assert torch.equal(bordered[~ignored], plain[~ignored])
    # every ignored pixel has a differently labelled 4- or 8-neighbour
    pad = torch.nn.functional.pad(plain[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    neigh = torch.stack([pad[1 + dy:41 + dy, 1 + dx:41 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    assert bool((neigh != plain.float()).any(0)[ignored].all())


def test_texture_sources(monkeypatch):
    proc = textures.procedural_textures(3, 32, seed=1)
    assert proc.shape == (3, 3, 32, 32) and 0 <= float(proc.min()) and float(proc.max()) <= 1
    assert torch.equal(proc, textures.procedural_textures(3, 32, seed=1))
    monkeypatch.setattr(textures, "skimage_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="dynzoo\\[train\\]"):
        pool = textures.texture_pool("auto", 32)
    assert pool.shape[1:] == (3, 32, 32)
    with pytest.raises(ImportError, match="scikit-image"):
        textures.texture_pool("skimage", 32)
    with pytest.raises(ValueError):
        textures.texture_pool("flickr", 32)


def test_photo_textures_when_scikit_image_is_installed():
    pytest.importorskip("skimage")
    pool = textures.texture_pool("skimage", 64)
    assert pool.shape == (len(textures.SKIMAGE_IMAGES), 3, 64, 64)
    assert float(pool.std()) > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        textures.texture_pool("auto", 64)
