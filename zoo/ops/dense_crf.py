"""Fully connected CRF with Gaussian edge potentials, mean-field inference: DeepLab v1/v2's boundary stage.

Papers: Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
NIPS 2011; Chen et al., "DeepLab: ... Atrous Convolution, and Fully Connected CRFs", TPAMI 2017, Section 3.3
(10 mean-field iterations; the LS-DFN paper's DeepLab v2 baseline is "DeepLabV2 with CRF").

What it computes, for logits (B, K, H, W) and an image (B, C, H, W) at the same size (RGB in 0..255 for the
published parameters): the unary is ``-log softmax(logits)``; the pairwise term is Potts with two Gaussian
kernels over pixels i, j at positions p and colours I,

    k_b(i, j) = exp(-|p_i - p_j|^2 / 2 bi_xy_std^2 - |I_i - I_j|^2 / 2 bi_rgb_std^2)   (appearance)
    k_s(i, j) = exp(-|p_i - p_j|^2 / 2 pos_xy_std^2)                                    (smoothness)

and mean field iterates ``Q <- softmax(log P + bi_weight * Kb~ Q + pos_weight * Ks~ Q)`` from ``Q = P``,
returning Q (B, K, H, W). This is the update of pydensecrf's ``DenseCRF2D.inference`` (Potts ``compat``,
the default symmetric normalisation ``K~ = D^-1/2 K D^-1/2`` with ``D = diag(K 1)``, the pixel itself
included), the library DeepLab v2's PyTorch port runs with ``pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67,
bi_rgb_std=3`` (kazuto1011/deeplab-pytorch@c4516e6:configs/voc12.yaml).

Decision (ours, documented): pydensecrf approximates the sums over all pixel pairs with a permutohedral
lattice; here they are exact over a window. The appearance kernel is summed over the offsets
``(i * bi_dilation, j * bi_dilation)``, ``|i|, |j| <= bi_radius`` (a dilated grid: with symmetric
normalisation a subsampled kernel approximates the full one, the constant factor cancels); the smoothness
kernel over all offsets within ``ceil(3 pos_xy_std)``. With ``bi_dilation = 1`` and ``bi_radius`` at least
the image size this IS the fully connected CRF. ``normalization="none"`` uses K as it is (pydensecrf's
NO_NORMALIZATION). Two more differences from that port: its unary clips P at 1e-5 (``unary_from_softmax``),
here log P is used as it is; and over a window of +-R px, a ``bi_xy_std`` much wider than R changes little
(the window, not the Gaussian, then bounds the appearance kernel's range).

``dense_crf`` (fast path) sums shifted views, one per offset, with the kernel weights computed once (memory
O(offsets x B x H x W), no N x N matrix, no host sync); ``dense_crf_reference`` builds the N x N kernel
matrices and multiplies (tests only: N = H W).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_shape

__all__ = ["DenseCRF", "dense_crf", "dense_crf_reference", "DEEPLAB_V2_CRF"]

# kazuto1011/deeplab-pytorch@c4516e6bb76c5985b18d1a38efe8fcbe0ffa9785:configs/voc12.yaml (CRF section)
DEEPLAB_V2_CRF = {"iterations": 10, "pos_weight": 3.0, "pos_xy_std": 1.0, "bi_weight": 4.0, "bi_xy_std": 67.0,
                  "bi_rgb_std": 3.0}
_NORMALIZATIONS = ("symmetric", "none")


def _check_options(iterations: int, stds: tuple[float, float, float], bi_radius: int, bi_dilation: int,
                   normalization: str) -> None:
    for name, value, low in (("iterations", iterations, 0), ("bi_radius", bi_radius, 0), ("bi_dilation", bi_dilation, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"dense_crf: {name} must be an int >= {low}, got {value!r}")
    for name, value in zip(("pos_xy_std", "bi_xy_std", "bi_rgb_std"), stds):
        if not value > 0:
            raise InputError(f"dense_crf: {name} (a kernel standard deviation) must be positive, got {value!r}")
    if normalization not in _NORMALIZATIONS:
        raise InputError(f"dense_crf: normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")


def _check(logits: torch.Tensor, image: torch.Tensor, iterations: int, stds: tuple[float, float, float],
           bi_radius: int, bi_dilation: int, normalization: str) -> None:
    check_shape(logits, "B,K,H,W", "logits")
    check_floating(logits, "logits")
    check_floating(image, "image")
    b, _, h, w = logits.shape
    check_shape(image, "B,C,H,W", "image (the same batch and size as the logits)", B=b, H=h, W=w)
    if image.device != logits.device:
        raise InputError(f"dense_crf: image is on {image.device}, logits on {logits.device}; move both to one device")
    _check_options(iterations, stds, bi_radius, bi_dilation, normalization)


def _offsets(radius: int, step: int) -> list[tuple[int, int]]:
    return [(i * step, j * step) for i in range(-radius, radius + 1) for j in range(-radius, radius + 1)]


def _smoothness_radius(pos_xy_std: float) -> int:
    return max(1, math.ceil(3 * pos_xy_std))


def _shifted(x: torch.Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    """x_padded[..., y + dy, x + dx] for the (B, C, H, W) image padded by ``pad`` on every side."""
    return x[:, :, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _window_weights(image: torch.Tensor, offsets: list[tuple[int, int]], xy_std: float,
                    rgb_std: float | None) -> torch.Tensor:
    """(O, B, H, W): the kernel between each pixel and its neighbour at each offset (0 outside the image)."""
    b, _, h, w = image.shape
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    inside = F.pad(image.new_ones(b, 1, h, w), (pad, pad, pad, pad))
    padded = F.pad(image, (pad, pad, pad, pad)) if rgb_std is not None else None
    weights = []
    for dy, dx in offsets:
        k = _shifted(inside, pad, dy, dx, h, w)[:, 0] * math.exp(-(dy * dy + dx * dx) / (2 * xy_std ** 2))
        if padded is not None:
            colour = (image - _shifted(padded, pad, dy, dx, h, w)).square().sum(1)
            k = k * torch.exp(colour * (-0.5 / rgb_std ** 2))
        weights.append(k)
    return torch.stack(weights)


def _message(q: torch.Tensor, weights: torch.Tensor, offsets: list[tuple[int, int]],
             norm: torch.Tensor | None) -> torch.Tensor:
    """sum_j K~(i, j) q_j over the window, ``norm`` (B, 1, H, W) the symmetric normaliser or None."""
    h, w = q.shape[-2:]
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    src = F.pad(q if norm is None else q * norm, (pad, pad, pad, pad))
    out = torch.zeros_like(q)
    for o, (dy, dx) in enumerate(offsets):
        out = out + weights[o].unsqueeze(1) * _shifted(src, pad, dy, dx, h, w)
    return out if norm is None else out * norm


def dense_crf(logits: torch.Tensor, image: torch.Tensor, iterations: int = 10, pos_weight: float = 3.0,
              pos_xy_std: float = 1.0, bi_weight: float = 4.0, bi_xy_std: float = 67.0, bi_rgb_std: float = 3.0,
              bi_radius: int = 5, bi_dilation: int = 1, normalization: str = "symmetric") -> torch.Tensor:
    """Mean-field marginals Q (B, K, H, W) of the dense CRF on ``logits`` (B, K, H, W) and ``image``
    (B, C, H, W) (module docstring). Fast path: shifted views per window offset."""
    _check(logits, image, iterations, (pos_xy_std, bi_xy_std, bi_rgb_std), bi_radius, bi_dilation, normalization)
    image = image.to(logits.dtype)
    kernels = []
    for weight, offsets, xy_std, rgb_std in (
            (bi_weight, _offsets(bi_radius, bi_dilation), bi_xy_std, bi_rgb_std),
            (pos_weight, _offsets(_smoothness_radius(pos_xy_std), 1), pos_xy_std, None)):
        if weight == 0:
            continue
        weights = _window_weights(image, offsets, xy_std, rgb_std)
        norm = weights.sum(0).unsqueeze(1).rsqrt() if normalization == "symmetric" else None
        kernels.append((weight, weights, offsets, norm))
    log_p = F.log_softmax(logits, 1)
    q = log_p.exp()
    for _ in range(iterations if kernels else 0):
        pairwise = sum(weight * _message(q, weights, offsets, norm) for weight, weights, offsets, norm in kernels)
        q = torch.softmax(log_p + pairwise, 1)
    return q


def _kernel_matrix(image: torch.Tensor, radius: int, step: int, xy_std: float, rgb_std: float | None) -> torch.Tensor:
    """(B, N, N) kernel over all pixel pairs within the window (N = H W, row-major pixels)."""
    b, c, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij")
    dy = ys.reshape(-1, 1) - ys.reshape(1, -1)
    dx = xs.reshape(-1, 1) - xs.reshape(1, -1)
    in_window = (dy.abs() <= radius * step) & (dx.abs() <= radius * step) & (dy % step == 0) & (dx % step == 0)
    k = torch.exp(-(dy.square() + dx.square()).to(image.dtype) / (2 * xy_std ** 2)) * in_window
    k = k.unsqueeze(0).expand(b, -1, -1)
    if rgb_std is not None:
        f = image.reshape(b, c, -1).transpose(1, 2)                                    # (B, N, C)
        k = k * torch.exp(-torch.cdist(f, f).square() / (2 * rgb_std ** 2))
    return k


def dense_crf_reference(logits: torch.Tensor, image: torch.Tensor, iterations: int = 10, pos_weight: float = 3.0,
                        pos_xy_std: float = 1.0, bi_weight: float = 4.0, bi_xy_std: float = 67.0,
                        bi_rgb_std: float = 3.0, bi_radius: int = 5, bi_dilation: int = 1,
                        normalization: str = "symmetric") -> torch.Tensor:
    """Plain implementation: explicit (B, N, N) kernel matrices and matrix products per iteration."""
    _check(logits, image, iterations, (pos_xy_std, bi_xy_std, bi_rgb_std), bi_radius, bi_dilation, normalization)
    image = image.to(logits.dtype)
    b, k, h, w = logits.shape
    total = torch.zeros(b, h * w, h * w, dtype=logits.dtype, device=logits.device)
    for weight, matrix in ((bi_weight, _kernel_matrix(image, bi_radius, bi_dilation, bi_xy_std, bi_rgb_std)),
                           (pos_weight, _kernel_matrix(image, _smoothness_radius(pos_xy_std), 1, pos_xy_std, None))):
        if normalization == "symmetric":
            d = matrix.sum(2).rsqrt()
            matrix = d.unsqueeze(2) * matrix * d.unsqueeze(1)
        total = total + weight * matrix
    log_p = F.log_softmax(logits, 1).reshape(b, k, h * w)
    q = log_p.exp()
    for _ in range(iterations):
        q = torch.softmax(log_p + q @ total.transpose(1, 2), 1)
    return q.reshape(b, k, h, w)


class DenseCRF(nn.Module):
    """:func:`dense_crf` with fixed parameters (defaults: DeepLab v2's, :data:`DEEPLAB_V2_CRF`, over a
    window of radius 5 offsets at 1 px, i.e. 11 x 11 offsets). ``forward(logits (B, K, H, W), image (B, C, H, W)) -> Q (B, K, H, W)``."""

    def __init__(self, iterations: int = 10, pos_weight: float = 3.0, pos_xy_std: float = 1.0, bi_weight: float = 4.0,
                 bi_xy_std: float = 67.0, bi_rgb_std: float = 3.0, bi_radius: int = 5, bi_dilation: int = 1,
                 normalization: str = "symmetric") -> None:
        super().__init__()
        self.options = dict(iterations=iterations, pos_weight=float(pos_weight), pos_xy_std=float(pos_xy_std),
                            bi_weight=float(bi_weight), bi_xy_std=float(bi_xy_std), bi_rgb_std=float(bi_rgb_std),
                            bi_radius=bi_radius, bi_dilation=bi_dilation, normalization=normalization)
        _check_options(iterations, (pos_xy_std, bi_xy_std, bi_rgb_std), bi_radius, bi_dilation, normalization)

    def forward(self, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return dense_crf(logits, image, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())
