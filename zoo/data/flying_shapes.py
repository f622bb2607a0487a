"""``FlyingShapes``: procedural optical-flow pairs with exact ground truth, in the spirit of FlyingChairs.

FlyingChairs (Dosovitskiy et al., ICCV 2015, https://arxiv.org/abs/1504.06852) pastes 3D chair
renderings on Flickr photos and moves background and chairs by random 2D affine transforms. Here the
chairs are textured 2D shapes (the kinds of :mod:`zoo.data.shapes`, with random lobes), the textures
are real photos when scikit-image is installed (:mod:`zoo.data.textures`), and:

- the background (layer 0) and every object (layers 1..K, K uniform in ``objects``) are placed in
  frame 1 by an affine map P_l (layer coordinates -> pixels) and moved by their own random affine
  motion M_l (pixels of frame 1 -> pixels of frame 2): rotation by ``rotation`` (radians, uniform
  +-), isotropic scale ``1 + uniform(+-scale)``, about the layer's centre, and a translation drawn
  uniformly in +-``translation`` (a fraction of the image width for x and height for y). Objects move
  relative to the image, not the background (as in FlyingChairs).
- frame 2 paints every layer with placement M_l o P_l, so a surface point keeps its texture colour.

Default motion statistics follow FlyingChairs rather than "anything affine": on the real FlyingChairs
pairs the background moves by a few pixels, almost uniformly (median |flow| 1.3-4.9 px at 384x512),
while chairs move far (99th percentile 22-75 px). The defaults give the background small translation
and almost no rotation or zoom, and the objects large translations; at 192x256 they produce a
median |flow| of about 4 px and a 99th percentile of about 34 px. An earlier default with strong
background rotation and zoom (smooth, large flow everywhere) trained a FlowNetS that learned the
synthetic task but predicted large spurious flow on the real pairs (EPE above the zero-flow baseline).

Flow definition (forward, frame 1 -> frame 2, pixels, channel 0 = u = x, 1 = v = y, the convention of
:mod:`zoo.flow`): for a frame-1 pixel x whose top-most layer is l, ``flow(x) = M_l(x) - x``. It is
exact (the motion is affine, evaluated at the pixel centre) and defined at every pixel, also where the
point is occluded in frame 2 or leaves the image (FlyingChairs' convention: flow of the frame-1
surface, no unknown values). ``"visible"`` (H, W bool) marks the frame-1 pixels whose point lands
inside frame 2 and is not covered there by another layer (the frame-2 layer map read at the nearest
pixel of the target, so it can be off by one pixel along layer boundaries); ``"valid"`` is all True.

Speed: parameters are drawn per sample from ``random.Random(sample_seed(seed, index))`` (a few dozen
scalars), rendering is vectorised over the batch (one ``grid_sample`` per layer and frame); see
:meth:`FlyingShapes.generate`. Use ``__getitems__`` (DataLoader does so automatically) for batches.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from zoo.data.shapes import (KINDS, Layers, RenderedDataset, _rotation, compose_affine, inactive_layer, pixel_grid,
                             random_layer, render_layers, sample_seed)
from zoo.data.textures import texture_pool

__all__ = ["FlyingShapes"]


def _motion(rng: random.Random, cx: float, cy: float, rotation: float, scale: float, tx: float, ty: float) -> list[list[float]]:
    """Affine motion about (cx, cy): x' = R S (x - c) + c + t."""
    angle = rng.uniform(-rotation, rotation)
    s = 1.0 + rng.uniform(-scale, scale)
    t = (rng.uniform(-tx, tx), rng.uniform(-ty, ty))
    a = math.cos(angle) * s
    b = math.sin(angle) * s
    return [[a, -b, cx + t[0] - (a * cx - b * cy)], [b, a, cy + t[1] - (b * cx + a * cy)]]


class FlyingShapes(RenderedDataset):
    """Procedural optical-flow pairs (see the module docstring for the model and flow definition).

    Sample ``i``: ``{"image1", "image2": (3, H, W) float32 in [0, 1], "flow": (2, H, W) float32 pixels,
    "valid": (H, W) bool (all True), "visible": (H, W) bool}``.

    Args:
        length: number of samples (indices 0..length-1, generated on the fly; a huge length is free).
        size: (H, W).
        seed: dataset seed; sample i depends only on (seed, i).
        objects: (min, max) number of moving objects.
        object_scale: (min, max) object semi-axis as a fraction of min(H, W).
        background_motion, object_motion: (rotation radians, relative scale change, translation fraction)
            bounds of the affine motions.
        textures: texture source (:func:`zoo.data.textures.texture_pool`).
        texture_size: side of the texture pool images (default: 2 x max(H, W), clamped to 96 .. 384).
    """

    def __init__(self, length: int = 1_000_000, size: tuple[int, int] = (192, 256), seed: int = 0,
                 objects: tuple[int, int] = (2, 6), object_scale: tuple[float, float] = (0.1, 0.35),
                 background_motion: tuple[float, float, float] = (0.015, 0.02, 0.02),
                 object_motion: tuple[float, float, float] = (0.15, 0.1, 0.12),
                 textures: str = "auto", texture_size: int | None = None) -> None:
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        if not (0 <= objects[0] <= objects[1]):
            raise ValueError(f"objects must be (min, max) with 0 <= min <= max, got {objects}")
        self.length, self.size, self.seed = int(length), (int(size[0]), int(size[1])), int(seed)
        self.objects, self.object_scale = tuple(objects), tuple(object_scale)
        self.background_motion, self.object_motion = tuple(background_motion), tuple(object_motion)
        if texture_size is None:  # about twice the image size, 96 .. 384
            texture_size = min(384, max(96, 2 * max(self.size)))
        self.pool = texture_pool(textures, texture_size)

    def _params(self, index: int) -> tuple[dict, list]:
        rng = random.Random(sample_seed(self.seed, index))
        h, w = self.size
        n_tex, tex_size = self.pool.shape[0], self.pool.shape[-1]
        base_zoom = tex_size / max(h, w)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        identity = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
        layers = [random_layer(rng, 0, (1.0, 1.0), identity, n_tex, tex_size, (0.5 * base_zoom, 1.0 * base_zoom), False)]
        rot, sc, tr = self.background_motion
        motions = [_motion(rng, cx, cy, rot, sc, tr * w, tr * h)]
        count = rng.randint(*self.objects)
        m = min(h, w)
        rot, sc, tr = self.object_motion
        for _ in range(count):
            a = rng.uniform(*self.object_scale) * m
            b = a * rng.uniform(0.5, 1.0)
            ox, oy = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            place = _rotation(rng.uniform(-math.pi, math.pi), 1.0, 1.0, ox, oy)
            kind = rng.randint(1, len(KINDS) - 1)
            layers.append(random_layer(rng, kind, (a, b), place, n_tex, tex_size,
                                       (0.3 * base_zoom, 0.8 * base_zoom), True))
            motions.append(_motion(rng, ox, oy, rot, sc, tr * w, tr * h))
        pad = self.objects[1] - count
        layers += [inactive_layer() for _ in range(pad)]
        motions += [identity] * pad
        return {k: [layer[k] for layer in layers] for k in layers[0]}, motions

    def generate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch for ``indices``: image1, image2 (B, 3, H, W), flow (B, 2, H, W), valid, visible (B, H, W)."""
        for i in indices:
            if not 0 <= i < self.length:
                raise IndexError(f"index {i} out of range for FlyingShapes of length {self.length}")
        params = [self._params(int(i)) for i in indices]
        layers = Layers.stack([p for p, _ in params])
        motion = torch.tensor([m for _, m in params], dtype=torch.float32)              # (B, L, 2, 3)
        h, w = self.size
        image1, top1 = render_layers(layers, layers.placement, h, w, self.pool)
        placement2 = compose_affine(motion, layers.placement)
        image2, top2 = render_layers(layers, placement2, h, w, self.pool)
        # forward flow of the top frame-1 layer at every pixel: M_l(x) - x
        grid = pixel_grid(h, w)
        b = len(indices)
        coef = torch.gather(motion.view(b, -1, 6), 1, top1.view(b, -1, 1).expand(-1, -1, 6)).view(b, h, w, 6)
        x, y = grid[..., 0], grid[..., 1]
        target = torch.stack([coef[..., 0] * x + coef[..., 1] * y + coef[..., 2],
                              coef[..., 3] * x + coef[..., 4] * y + coef[..., 5]], -1)      # M_l(x), (B, H, W, 2)
        flow = (target - grid).permute(0, 3, 1, 2).contiguous()
        # visibility: the frame-2 top layer at the target, read from the rendered map (nearest pixel)
        tx = target[..., 0].round().long()
        ty = target[..., 1].round().long()
        in_frame = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
        flat = (ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1)).flatten(1)
        top2_at = torch.gather(top2.flatten(1), 1, flat).view(b, h, w)
        visible = (top2_at == top1) & in_frame
        valid = torch.ones(b, h, w, dtype=torch.bool)
        return {"image1": image1, "image2": image2, "flow": flow, "valid": valid, "visible": visible}
