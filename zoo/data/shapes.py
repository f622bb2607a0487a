"""``Shapes``: a procedural semantic-segmentation dataset, and the layer renderer shared with
:mod:`zoo.data.flying_shapes`.

A scene is a stack of layers painted back to front: layer 0 is a textured background filling the image,
layers 1..K are textured shapes. Each layer has an affine placement (layer coordinates -> image pixels);
a pixel belongs to the top-most layer whose shape contains its layer coordinates. Shapes are defined in
polar form on the layer coordinates normalised by the semi-axes (a, b): a point at radius r and angle phi
is inside when ``r_min(phi) <= r <= r_max(phi) * (1 + lobe_amp * sin(lobes * phi + lobe_phase))``.
Kinds (= class ids in :class:`Shapes`): 0 background (everything inside), 1 ellipse, 2 rectangle,
3 triangle, 4 diamond, 5 star (5 points), 6 ring. Textures are sampled with ``grid_sample`` (bilinear,
reflection padding) from :func:`zoo.data.textures.texture_pool` through a per-layer affine map (random
zoom, rotation, flip and offset), then a per-layer colour gain and bias are applied.

Pixel coordinates: x = column, y = row, pixel centres at integers (0..W-1, 0..H-1).

Determinism: every sample's parameters are drawn from ``random.Random(sample_seed(seed, index))``, and
rendering is vectorised torch code without randomness, so a sample depends only on (seed, index), not on
the batch it is generated in, the DataLoader worker or the DDP rank.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data.textures import texture_pool

__all__ = ["KINDS", "Layers", "RenderedDataset", "Shapes", "sample_seed", "pixel_grid", "affine_points",
           "invert_affine", "layers_inside", "render_layers"]

KINDS = ("background", "ellipse", "rectangle", "triangle", "diamond", "star", "ring")


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a dataset seeded with ``seed`` (stable across processes)."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class Layers:
    """Batched layer parameters, L layers per sample (inactive layers are never inside).

    kind (B, L) long; active (B, L) bool; axes (B, L, 2) semi-axes a, b in layer units; lobes (B, L, 3)
    (amplitude, count, phase); texture (B, L) long index into the pool; tex_affine (B, L, 2, 3) layer
    coords -> texture pixels; gain, bias (B, L, 3) colour jitter; placement (B, L, 2, 3) layer coords
    -> image pixels.
    """

    kind: torch.Tensor
    active: torch.Tensor
    axes: torch.Tensor
    lobes: torch.Tensor
    texture: torch.Tensor
    tex_affine: torch.Tensor
    gain: torch.Tensor
    bias: torch.Tensor
    placement: torch.Tensor

    @staticmethod
    def stack(per_sample: Sequence[dict]) -> "Layers":
        """From per-sample dicts of plain lists (L entries each, same L for all samples)."""
        def t(key, dtype=torch.float32):
            return torch.tensor([s[key] for s in per_sample], dtype=dtype)
        return Layers(kind=t("kind", torch.long), active=t("active", torch.bool), axes=t("axes"),
                      lobes=t("lobes"), texture=t("texture", torch.long), tex_affine=t("tex_affine"),
                      gain=t("gain"), bias=t("bias"), placement=t("placement"))


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel-centre coordinates (x, y)."""
    ys = torch.arange(height, dtype=dtype)
    xs = torch.arange(width, dtype=dtype)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def affine_points(affine: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) affines to (B, H, W, 2) or (H, W, 2) points -> (B, H, W, 2) (elementwise, no bmm)."""
    x, y = points[..., 0], points[..., 1]
    a = [affine[:, i, j].view(-1, 1, 1) for i in range(2) for j in range(3)]
    return torch.stack([a[0] * x + a[1] * y + a[2], a[3] * x + a[4] * y + a[5]], -1)


def invert_affine(affine: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 2, 3) affine maps (closed form)."""
    a, b, tx = affine[..., 0, 0], affine[..., 0, 1], affine[..., 0, 2]
    c, d, ty = affine[..., 1, 0], affine[..., 1, 1], affine[..., 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return torch.stack([torch.stack([ia, ib, -(ia * tx + ib * ty)], -1),
                        torch.stack([ic, id_, -(ic * tx + id_ * ty)], -1)], -2)


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer o inner`` for (..., 2, 3) affines."""
    lin = outer[..., :2] @ inner[..., :2]
    trans = (outer[..., :2] @ inner[..., 2:]).squeeze(-1) + outer[..., 2]
    return torch.cat([lin, trans.unsqueeze(-1)], -1)


_TRIANGLE_NORMALS = [(math.cos(-math.pi / 6 + 2 * math.pi * k / 3), math.sin(-math.pi / 6 + 2 * math.pi * k / 3))
                     for k in range(3)]


def _linear(affine: torch.Tensor, points: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``affine[:, 0] * x + affine[:, 1] * y + affine[:, 2]`` for (B, 3) coefficients.

    ``points`` is either ``(xs (W,), ys (H,))`` of a pixel grid (computed by broadcasting: one full-size
    operation) or a (B, H, W, 2) tensor of points."""
    c = [affine[:, j].view(-1, 1, 1) for j in range(3)]
    if isinstance(points, tuple):
        xs, ys = points
        return (c[0] * xs.view(1, 1, -1) + c[2]) + c[1] * ys.view(1, -1, 1)
    return c[0] * points[..., 0] + c[1] * points[..., 1] + c[2]


def _inside(kind: torch.Tensor, gauge_affine: torch.Tensor, lobes: torch.Tensor, points) -> torch.Tensor:
    """(B, H, W) bool: are ``points`` (see :func:`_linear`) inside the shape of each sample's layer.

    ``gauge_affine`` (B, 2, 3) maps image pixels to normalised layer coordinates (u, v) (the layer's
    inverse placement divided by its semi-axes). Each kind has a gauge ``n(u, v)`` (1 on its outline,
    scaling linearly with the radius): ellipse ``r``, rectangle ``max(|u|, |v|)``, triangle
    ``2 max_k <(u, v), n_k>`` over its 3 edge normals (circumradius 1), diamond ``|u| + |v|``, star
    ``r / (0.6 + 0.4 cos 5 theta)`` (theta measured from the -v axis, Chebyshev polynomial), ring ``r``
    with ``r >= 0.55``; inside when ``n <= 1 + lobe_amp * sin(lobes * phi + lobe_phase)``. Linear
    functions of (u, v) are evaluated straight from the pixel grid, and only the kinds and lobes present
    are computed (the parameters live on the host: this is data-generation code, not a model).
    """
    u = _linear(gauge_affine[:, 0], points)
    v = _linear(gauge_affine[:, 1], points)
    kinds = set(kind.tolist())
    k = kind[:, None, None]
    r = torch.hypot(u, v)
    gauge = r
    for kid in sorted(kinds):
        if kid == 2:
            g = torch.maximum(u.abs(), v.abs())
        elif kid == 3:
            n = [_linear(nx * gauge_affine[:, 0] + ny * gauge_affine[:, 1], points) for nx, ny in _TRIANGLE_NORMALS]
            g = 2 * torch.maximum(torch.maximum(n[0], n[1]), n[2])
        elif kid == 4:
            g = u.abs() + v.abs()
        elif kid == 5:
            c = -v / r.clamp_min(1e-12)
            c2 = c * c
            g = r / (0.6 + 0.4 * (((16 * c2 - 20) * c2 + 5) * c))
        else:
            continue
        gauge = torch.where(k == kid, g, gauge)
    if bool((lobes[:, 0] != 0).any()):
        amp, count, phase = (lobes[:, i, None, None] for i in range(3))
        inside = gauge <= 1 + amp * torch.sin(count * torch.atan2(v, u) + phase)
    else:
        inside = gauge <= 1
    if 6 in kinds:
        inside = inside & ((k != 6) | (r >= 0.55))
    return (k == 0) | inside


def _gauge_affines(layers: Layers, inverse: torch.Tensor) -> torch.Tensor:
    """(B, L, 2, 3): image pixels -> layer coordinates divided by the semi-axes."""
    return inverse / layers.axes.unsqueeze(-1)


def layers_inside(layers: Layers, inverse: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W) bool: is each point ((B, H, W, 2) image pixels) inside each layer, with ``inverse``
    (B, L, 2, 3) the image -> layer coordinate maps."""
    gauge = _gauge_affines(layers, inverse)
    out = [_inside(layers.kind[:, l], gauge[:, l], layers.lobes[:, l], points) & layers.active[:, l, None, None]
           for l in range(layers.kind.shape[1])]
    return torch.stack(out, 1)


def top_layer(inside: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W) bool -> (B, H, W) long index of the top-most layer containing each point."""
    levels = torch.arange(inside.shape[1]).view(1, -1, 1, 1)
    return torch.where(inside, levels, torch.full_like(levels, -1)).amax(1)


def render_layers(layers: Layers, placement: torch.Tensor, height: int, width: int,
                  pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint the layers placed by ``placement`` (B, L, 2, 3) -> image (B, 3, H, W) in [0, 1] and the
    (B, H, W) index of the top layer at every pixel.

    Texture lookups are grouped by texture: one ``grid_sample`` per texture in use, over all the
    (sample, layer) tiles that show it (no per-sample copy of the texture pool); layers hidden
    everywhere are not sampled.
    """
    inverse = invert_affine(placement)
    gauge = _gauge_affines(layers, inverse)
    axes = (torch.arange(width, dtype=torch.float32), torch.arange(height, dtype=torch.float32))
    b, n_layers = layers.kind.shape
    size = pool.shape[-1]
    top = torch.zeros(b, height, width, dtype=torch.long)
    for l in range(n_layers):
        inside = _inside(layers.kind[:, l], gauge[:, l], layers.lobes[:, l], axes) & layers.active[:, l, None, None]
        top.masked_fill_(inside, l)
    shown = torch.stack([(top == l).flatten(1).any(1) for l in range(n_layers)], 1).tolist()   # (B, L)
    # pixels -> normalised texture coordinates of grid_sample: T o P^-1, then (t + 0.5) * 2 / size - 1
    to_tex = compose_affine(layers.tex_affine, inverse) * (2.0 / size)
    to_tex[..., 2] += 1.0 / size - 1.0
    image = torch.zeros(b, 3, height, width)
    groups: dict[int, list[tuple[int, int]]] = {}
    textures = layers.texture.tolist()
    for i in range(b):
        for l in range(n_layers):
            if shown[i][l]:
                groups.setdefault(textures[i][l], []).append((i, l))
    for tex, tiles in groups.items():
        aff = torch.stack([to_tex[i, l] for i, l in tiles])                      # (n, 2, 3)
        norm = torch.stack([_linear(aff[:, 0], axes), _linear(aff[:, 1], axes)], -1)
        colour = F.grid_sample(pool[tex:tex + 1], norm.view(1, -1, width, 2), mode="bilinear",
                               padding_mode="reflection", align_corners=False)
        colour = colour.view(3, len(tiles), height, width)
        for n, (i, l) in enumerate(tiles):
            c = torch.addcmul(layers.bias[i, l].view(3, 1, 1), colour[:, n], layers.gain[i, l].view(3, 1, 1))
            image[i] = torch.where((top[i] == l).unsqueeze(0), c.clamp_(0, 1), image[i])
    return image, top


def _rotation(angle: float, sx: float, sy: float, tx: float, ty: float) -> list[list[float]]:
    """2x3 affine: scale (sx, sy), then rotate by ``angle``, then translate."""
    c, s = math.cos(angle), math.sin(angle)
    return [[c * sx, -s * sy, tx], [s * sx, c * sy, ty]]


def random_layer(rng: random.Random, kind: int, axes: tuple[float, float], placement: list[list[float]],
                 n_textures: int, tex_size: int, texture_zoom: tuple[float, float], lobes: bool) -> dict:
    """Random texture, texture map, colour jitter and lobes for one layer (plain lists)."""
    zoom = rng.uniform(*texture_zoom) * (-1 if rng.random() < 0.5 else 1)
    tex = _rotation(rng.uniform(-math.pi, math.pi), zoom, abs(zoom),
                    rng.uniform(0, tex_size), rng.uniform(0, tex_size))
    if lobes and rng.random() < 0.5:
        lobe = [rng.uniform(0.05, 0.25), float(rng.randint(2, 6)), rng.uniform(0, 2 * math.pi)]
    else:
        lobe = [0.0, 0.0, 0.0]
    return {
        "kind": kind, "active": True, "axes": list(axes), "lobes": lobe,
        "texture": rng.randrange(n_textures), "tex_affine": tex,
        "gain": [rng.uniform(0.7, 1.3) for _ in range(3)], "bias": [rng.uniform(-0.1, 0.1)] * 3,
        "placement": placement,
    }


def inactive_layer() -> dict:
    return {"kind": 0, "active": False, "axes": [1.0, 1.0], "lobes": [0.0, 0.0, 0.0], "texture": 0,
            "tex_affine": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "gain": [1.0] * 3, "bias": [0.0] * 3,
            "placement": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}


class RenderedDataset(Dataset):
    """A procedural dataset of ``self.length`` samples that a subclass renders in batches with
    ``generate(indices) -> {name: (B, ...) tensor}``: sample ``i`` is ``generate([i])`` without the batch
    dimension, and ``__getitems__`` (which DataLoader uses) renders a whole batch in one vectorised pass."""

    length: int

    def __len__(self) -> int:
        return self.length

    def generate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.generate([int(index)])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Batched fetching for DataLoader (one vectorised render per batch)."""
        batch = self.generate(list(indices))
        return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]


class Shapes(RenderedDataset):
    """Procedural semantic segmentation: textured shapes of 6 kinds over a textured background.

    Sample ``i`` is a dict ``{"image": (3, H, W) float32 in [0, 1], "label": (H, W) int64}`` with labels
    0 (background) .. 6 (:data:`KINDS`); with ``ignore_border`` pixels whose 3x3 neighbourhood holds
    two labels are 255 (as PASCAL VOC's boundary band). The class is the shape, never the texture (any
    texture on any shape), so a network must learn shape. ``num_classes`` is 7.

    Args:
        length: number of samples (indices 0..length-1; each is generated on the fly).
        size: (H, W).
        seed: dataset seed; sample i depends only on (seed, i).
        objects: (min, max) number of shapes per image.
        scale: (min, max) semi-axis length as a fraction of min(H, W).
        textures: texture source for :func:`zoo.data.textures.texture_pool`.
        ignore_border: mark the boundary band with 255.
        texture_size: side of the texture pool images (default: 2 x max(H, W), clamped to 96 .. 384).
        background: "texture" (a photo/procedural texture like the shapes: figure and ground differ only
            by texture, hard for a network trained from scratch) or "flat" (one random grey level per image,
            seeded by (seed, i); the shapes keep their textures, so telling figure from ground is easy
            and the class still has to come from the shape).
    """

    num_classes = len(KINDS)

    def __init__(self, length: int = 10000, size: tuple[int, int] = (128, 128), seed: int = 0,
                 objects: tuple[int, int] = (1, 5), scale: tuple[float, float] = (0.1, 0.35),
                 textures: str = "auto", ignore_border: bool = False,
                 texture_size: int | None = None, background: str = "texture") -> None:
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        if background not in ("texture", "flat"):
            raise ValueError(f"background must be 'texture' or 'flat', got {background!r}")
        self.background = background
        if not (1 <= objects[0] <= objects[1]):
            raise ValueError(f"objects must be (min, max) with 1 <= min <= max, got {objects}")
        self.length, self.size, self.seed = int(length), (int(size[0]), int(size[1])), int(seed)
        self.objects, self.scale, self.ignore_border = tuple(objects), tuple(scale), ignore_border
        if texture_size is None:  # about twice the image size, 96 .. 384
            texture_size = min(384, max(96, 2 * max(self.size)))
        self.pool = texture_pool(textures, texture_size)

    def _params(self, index: int) -> dict:
        rng = random.Random(sample_seed(self.seed, index))
        h, w = self.size
        n_tex, tex_size = self.pool.shape[0], self.pool.shape[-1]
        zoom = (0.5 * tex_size / max(h, w), 1.5 * tex_size / max(h, w))
        layers = [random_layer(rng, 0, (1.0, 1.0), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], n_tex, tex_size, zoom, False)]
        count = rng.randint(*self.objects)
        m = min(h, w)
        for _ in range(count):
            a = rng.uniform(*self.scale) * m
            b = a * rng.uniform(0.6, 1.0)
            place = _rotation(rng.uniform(-math.pi, math.pi), 1.0, 1.0, rng.uniform(0, w - 1), rng.uniform(0, h - 1))
            layers.append(random_layer(rng, rng.randint(1, len(KINDS) - 1), (a, b), place, n_tex, tex_size,
                                       (zoom[0] * 0.5, zoom[1] * 0.5), False))
        layers += [inactive_layer() for _ in range(self.objects[1] - count)]
        return {k: [layer[k] for layer in layers] for k in layers[0]}

    def generate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch: ``{"image": (B, 3, H, W), "label": (B, H, W)}`` for ``indices`` (vectorised)."""
        for i in indices:
            if not 0 <= i < self.length:
                raise IndexError(f"index {i} out of range for Shapes of length {self.length}")
        layers = Layers.stack([self._params(int(i)) for i in indices])
        image, top = render_layers(layers, layers.placement, *self.size, self.pool)
        if self.background == "flat":
            grey = [random.Random(sample_seed(self.seed, int(i)) + 1).random() for i in indices]
            flat = torch.tensor(grey, dtype=image.dtype).view(-1, 1, 1, 1).expand(-1, 3, 1, 1)
            image = torch.where((top == 0).unsqueeze(1), flat, image)
        label = torch.gather(layers.kind, 1, top.flatten(1)).view_as(top)
        if self.ignore_border:
            lab = label.unsqueeze(1).float()
            lo = -F.max_pool2d(-lab, 3, 1, 1)
            hi = F.max_pool2d(lab, 3, 1, 1)
            label = torch.where((hi != lo).squeeze(1), torch.full_like(label, 255), label)
        return {"image": image, "label": label}
