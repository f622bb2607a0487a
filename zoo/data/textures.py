"""Texture sources for the procedural datasets (:mod:`zoo.data.flying_shapes`, :mod:`zoo.data.shapes`).

Textures decide whether a flow network trains at all: on smooth synthetic textures FlowNetS stays on the
zero-flow plateau for thousands of iterations, on real photo crops it leaves it (project training
notes). FlyingChairs itself pastes chairs on Flickr photos. So the default source is real photos:

``source="skimage"`` (needs scikit-image: ``pip install dynzoo[train]``): photos bundled inside the
scikit-image wheel (read from the installed package, no download), each under a licence that allows
any use:

=========================  ==================================================================
image (``skimage.data``)   licence (from its docstring in skimage/data/_fetchers.py)
=========================  ==================================================================
astronaut                  public domain (NASA)
brick                      CC0 (CC0Textures)
camera                     CC0 (photographer Lav Varshney)
chelsea                    CC0 (photographer Stefan van der Walt)
coffee                     CC0 (photographer Rachel Michetti)
coins                      no known copyright restrictions (Brooklyn Museum)
grass                      CC0 (DeviantArt, linolafett)
gravel                     CC0 (CC0Textures)
hubble_deep_field          public domain (NASA)
immunohistochemistry       no known copyright restrictions (CMMI)
retina                     CC0 1.0 (Wikimedia, Mikael Häggström)
rocket                     public domain (SpaceX)
=========================  ==================================================================

Grey images are colourised with a random (seeded) per-channel gain so that every texture is RGB.

``source="procedural"`` (no dependency; the fallback when scikit-image is missing, with a warning):
multi-octave value noise (random low-resolution grids upsampled bicubically, amplitude halved per
octave) per channel, mixed with oriented stripes and checkerboards. Documented as WORSE for training
flow networks (see above); use it for tests and when scikit-image cannot be installed.

Every texture is resized (area / bilinear, aspect kept by a centre crop) to ``size`` x ``size`` and
stacked into one float32 tensor (N, 3, size, size) in [0, 1], so the generators can gather and sample
textures with one ``grid_sample`` call per layer.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

__all__ = ["SKIMAGE_IMAGES", "texture_pool", "procedural_textures", "photo_textures", "skimage_available"]

SKIMAGE_IMAGES: dict[str, str] = {
    "astronaut": "public domain (NASA)",
    "brick": "CC0",
    "camera": "CC0",
    "chelsea": "CC0",
    "coffee": "CC0",
    "coins": "no known copyright restrictions",
    "grass": "CC0",
    "gravel": "CC0",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "retina": "CC0 1.0",
    "rocket": "public domain (SpaceX)",
}


def skimage_available() -> bool:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


def _square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) float -> (3, size, size): centre crop to a square, then resize (antialiased)."""
    _, h, w = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = image[:, top:top + s, left:left + s].unsqueeze(0)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)
    return out[0].clamp(0, 1)


def photo_textures(size: int = 384, seed: int = 0) -> torch.Tensor:
    """The scikit-image photos listed in :data:`SKIMAGE_IMAGES` as (N, 3, size, size) float32 in [0, 1].

    Raises ImportError when scikit-image is not installed.
    """
    import skimage.data

    g = torch.Generator().manual_seed(seed)
    out = []
    for name in SKIMAGE_IMAGES:
        array = getattr(skimage.data, name)()
        t = torch.as_tensor(array)
        if t.dtype == torch.bool:
            t = t.to(torch.uint8) * 255
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        if t.dim() == 2:  # grey: colourise with a random per-channel gain
            gain = 0.6 + 0.4 * torch.rand(3, generator=g)
            t = t.unsqueeze(0) * gain.view(3, 1, 1)
        else:
            t = t[..., :3].permute(2, 0, 1)
        out.append(_square(t.contiguous(), size))
    return torch.stack(out)


def procedural_textures(count: int = 16, size: int = 384, seed: int = 0) -> torch.Tensor:
    """``count`` procedural textures (N, 3, size, size) float32 in [0, 1]: multi-octave value noise
    mixed with stripes or checkerboards (deterministic in ``seed``). Worse than photos for flow training."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    out = []
    for _ in range(count):
        tex = torch.zeros(1, 3, size, size)
        amp, total = 1.0, 0.0
        for octave in range(2, 8):  # grids of 4 .. 128 cells
            cells = 2 ** octave
            grid = torch.rand(1, 3, cells + 1, cells + 1, generator=g)
            tex += amp * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)
            total += amp
            amp *= 0.55
        tex = tex / total
        mix = torch.rand(3, 3, generator=g) * 0.5 + torch.eye(3) * 0.5  # correlate the channels a little
        tex = torch.einsum("ij,bjhw->bihw", mix / mix.sum(1, keepdim=True), tex)
        angle = float(torch.rand((), generator=g)) * torch.pi
        period = 4.0 + 28.0 * float(torch.rand((), generator=g))
        u = xx * torch.cos(torch.tensor(angle)) + yy * torch.sin(torch.tensor(angle))
        v = -xx * torch.sin(torch.tensor(angle)) + yy * torch.cos(torch.tensor(angle))
        if float(torch.rand((), generator=g)) < 0.5:
            pattern = 0.5 + 0.5 * torch.sin(2 * torch.pi * u / period)
        else:
            pattern = ((torch.floor(u / period) + torch.floor(v / period)) % 2).float()
        colour = torch.rand(3, 1, 1, generator=g)
        weight = 0.2 + 0.4 * float(torch.rand((), generator=g))
        tex = (1 - weight) * tex[0] + weight * pattern * colour
        lo, hi = tex.amin(), tex.amax()
        out.append(((tex - lo) / (hi - lo + 1e-6)).clamp(0, 1))
    return torch.stack(out)


@functools.lru_cache(maxsize=8)
def _cached_pool(source: str, size: int, seed: int) -> torch.Tensor:
    if source == "skimage":
        return photo_textures(size, seed)
    return procedural_textures(16, size, seed)


def texture_pool(source: str = "auto", size: int = 384, seed: int = 0) -> torch.Tensor:
    """The texture pool (N, 3, size, size) float32 in [0, 1] (cached per process; do not modify it).

    ``source``: ``"skimage"`` (photos; ImportError without scikit-image), ``"procedural"``, or
    ``"auto"``: photos when scikit-image is installed, else procedural textures with a warning.
    """
    if source not in ("auto", "skimage", "procedural"):
        raise ValueError(f"texture source must be 'auto', 'skimage' or 'procedural', got {source!r}")
    if source == "auto":
        if skimage_available():
            source = "skimage"
        else:
            warnings.warn(
                "scikit-image is not installed: zoo.data falls back to procedural textures, on which flow "
                "networks train much worse (they stay at zero flow for a long time). Install the photos "
                "with `pip install dynzoo[train]` (or `pip install scikit-image`).",
                RuntimeWarning, stacklevel=2,
            )
            source = "procedural"
    if source == "skimage" and not skimage_available():
        raise ImportError("texture source 'skimage' needs scikit-image: pip install dynzoo[train]")
    return _cached_pool(source, int(size), int(seed))
