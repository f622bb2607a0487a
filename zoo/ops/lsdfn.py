"""LS-DFN: dynamic filtering with a large sampling field.

Paper: Jialin Wu, Dai Li, Yu Yang, Chandrajit Bajaj, Xiangyang Ji, "Dynamic Filtering with Large
Sampling Field for ConvNets", ECCV 2018, https://arxiv.org/abs/1803.07624 (v1: "Dynamic Sampling
Convolutional Neural Networks"). No official code exists; the paper's formulas are reconstructed
here from its text, and every choice the text leaves open is listed below.

What it computes
----------------
Three branches read the input ``x``: a feature branch gives features ``F`` (C channels), a kernel
branch gives a position-specific kernel factorised as ``U`` (C' x C per position: channel mixing)
and ``V`` (k*k per position and output channel: shared geometry), an attention branch gives a
position attention ``A`` (k*k channels) and a sample attention ``S`` (s*s channels). The kernel at
output position p = (y, x) is

    W[p, t, v, u] = U[p, v, u] * V[p, v, t] + (1 / C) * [t is the centre tap]

(the 1/C centre term is the residual "identity kernel": with U*V = 0 the layer outputs channel
means). The kernel is applied to s*s regions ("samples") whose centres are p + (alpha, beta) * gamma,
alpha, beta in {-(s-1)/2 .. (s-1)/2}; the sample results are weighted by (S + 1) and summed:

    Y[v, p] = sum_{a,b} (S[ab, p] + 1) * sum_t (A[t, q] + 1) * sum_u W[p, t, v, u] * F[u, p + d_ab + o_t]

with d_ab = (alpha*gamma, beta*gamma), o_t the tap offset in {-(k-1)/2 .. (k-1)/2}^2, and q the
position at which the position attention is read (see ``position_attention_at``). s = 1 is the
plain dynamic local filter of DFN (De Brabandere et al. 2016) with the factorised kernel.

Tensor layouts (functional API)
-------------------------------
``features`` (B, C, H, W); ``u`` (B, C', C, H, W); ``v`` (B, C', k*k, H, W); ``position_attention``
(B, k*k, H, W); ``sample_attention`` (B, s*s, H, W); output (B, C', H, W). Taps t = i*k + j and
samples ab = a*s + b are row-major (i, a index rows / y; j, b index columns / x). Attentions are
passed raw: the "+1" of the paper is added inside.

Fast path
---------
The kernel is shared by all s*s samples and the sample attention is one scalar per sample and
output position, so per tap t the attention-weighted samples are summed first,
G[p, t, u] = sum_ab w_ab(p, t) F[u, p + d_ab + o_t] (s*s multiply-adds into a k*k x C map per
position, channels-last, no unfolded s*s*k*k copy), then the channels are contracted with U
(one C' x C by C x k*k matmul per position), weighted by V (and the position attention) and summed
over taps. Work per position: s^2 k^2 C + k^2 C' C multiply-adds, against s^2 k^2 C' C for the
direct form; memory O(k^2 C H W + C' C H W) instead of O(s^2 k^2 C H W). ``u`` stored channels-last
in memory (``u.permute(0, 3, 4, 1, 2)`` contiguous, as :class:`LSDFN` produces it) is read without a
copy; any other layout costs one transposing copy of U. bfloat16/float16 inputs accumulate the
samples in float32. On the CPU the sample sum runs in tiles of output rows so that its accumulator
stays in cache while the s*s samples are added (:func:`lsdfn_window_rows`: the rule and its
measurement); on CUDA and under torch.compile / torch.export it runs in one pass.

Interpretation choices (the paper is silent or its formulas were lost)
---------------------------------------------------------------------
* Centred windows: taps and samples are centred on p (odd k and odd s are required), output has
  the input's H x W (stride 1); the paper's top-left indexing is only a shift.
* Zero padding: F is zero outside the image. For ``position_attention_at="sample"`` the raw
  position attention is zero outside the image too (weight 1, like the "+1" residual default).
* Position attention index ``q`` (argument ``position_attention_at``): ``"output"`` (default) reads
  A at p, i.e. the attention re-weights the taps of the position-specific kernel; ``"sample"``
  reads A at the sample centre p + d_ab, i.e. it re-weights taps according to the sampled region
  (the paper's "filter noise of the sampled features" reading). Both run on the fast path.
* Feature branch (``feature_kernel_size``): one conv C -> C (default 1x1, no activation), or the
  identity with ``None``. The paper trains the feature branch, so it has parameters by default.
* Kernel branch: two convs on x (``kernel_branch_kernel_size``, default 1x1) producing U
  (C'*C channels, default PyTorch init) and V (C'*k*k channels, zero-initialised). Attention
  branch: two convs (``attention_kernel_size``, default 3x3) producing A (k*k) and S (s*s), both
  zero-initialised; no activation on any branch output. With V = A = S = 0 the layer starts
  exactly as the residual: Y[v, p] = sum_ab mean_u F[u, p + d_ab]; V still gets a gradient
  (through U != 0), so the factorised kernel leaves zero at the first step.
* No bias or normalisation on the output (the paper concatenates the C' outputs to other features).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape

__all__ = ["LSDFN", "lsdfn", "lsdfn_reference", "lsdfn_window_rows"]

_ATTENTION_AT = ("output", "sample")


def _odd_root(n: int, name: str, what: str) -> int:
    root = math.isqrt(n)
    if root * root != n or root % 2 == 0:
        raise InputError(f"{name} must have {what} = m*m channels with m odd, got {n}")
    return root


def _check_inputs(
    features: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    position_attention: torch.Tensor,
    sample_attention: torch.Tensor,
    sample_stride: int,
    position_attention_at: str,
) -> tuple[int, int, int, int, int, int, int]:
    fs = check_shape(features, "B,C,H,W", "features")
    b, c, h, w = fs["B"], fs["C"], fs["H"], fs["W"]
    us = check_shape(u, "B,C',C,H,W", "u", B=b, C=c, H=h, W=w)
    vs = check_shape(v, "B,C',K,H,W", "v", B=b, H=h, W=w, **{"C'": us["C'"]})
    k = _odd_root(vs["K"], "v", "K = k*k (taps)")
    check_shape(position_attention, "B,K,H,W", "position_attention", B=b, K=k * k, H=h, W=w)
    ss = check_shape(sample_attention, "B,S,H,W", "sample_attention", B=b, H=h, W=w)
    s = _odd_root(ss["S"], "sample_attention", "S = s*s (samples)")
    for name, t in (("features", features), ("u", u), ("v", v),
                    ("position_attention", position_attention), ("sample_attention", sample_attention)):
        check_floating(t, name)
        check_same(features, t, f"lsdfn: features and {name}")
    if isinstance(sample_stride, bool) or not isinstance(sample_stride, int) or sample_stride < 1:
        raise InputError(f"sample_stride must be a positive int, got {sample_stride!r}")
    if position_attention_at not in _ATTENTION_AT:
        raise InputError(f"position_attention_at must be one of {_ATTENTION_AT}, got {position_attention_at!r}")
    return b, c, us["C'"], h, w, k, s


def lsdfn_reference(
    features: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    position_attention: torch.Tensor,
    sample_attention: torch.Tensor,
    sample_stride: int = 1,
    position_attention_at: str = "output",
) -> torch.Tensor:
    """LS-DFN by the book: materialises the unfolded s*s*k*k neighbourhood and the dense kernel.

    Shapes as in the module docstring; returns (B, C', H, W). Memory O(s^2 k^2 C H W); kept as the
    test oracle and benchmark baseline.
    """
    b, c, co, h, w, k, s = _check_inputs(
        features, u, v, position_attention, sample_attention, sample_stride, position_attention_at
    )
    g, r, half = sample_stride, (s - 1) // 2, (k - 1) // 2
    pad = r * g + half
    fp = nnf.pad(features, (pad, pad, pad, pad))
    # neighbourhood[b, ab, u, t, y, x] = F[u, (y, x) + d_ab + o_t] (zero outside the image)
    neighbourhood = features.new_empty((b, s * s, c, k * k, h, w))
    for a in range(s):
        for bb in range(s):
            window = fp[:, :, a * g: a * g + h + 2 * half, bb * g: bb * g + w + 2 * half]
            neighbourhood[:, a * s + bb] = nnf.unfold(window, k).view(b, c, k * k, h, w)

    # position attention weight[b, ab, t, y, x]
    if position_attention_at == "output":
        pos = (position_attention + 1).unsqueeze(1)                          # (B, 1, K, H, W)
    else:
        ap = nnf.pad(position_attention, (r * g,) * 4)                       # zero outside the image
        pos = torch.stack([ap[:, :, a * g: a * g + h, bb * g: bb * g + w]
                           for a in range(s) for bb in range(s)], 1) + 1    # (B, S, K, H, W)

    kernel = u.unsqueeze(3) * v.unsqueeze(2)                                 # (B, C', C, K, H, W)
    kernel[:, :, :, half * k + half] += 1.0 / c                              # residual identity kernel

    neighbourhood.mul_(pos.unsqueeze(2))                                     # in place: one copy less
    per_sample = torch.einsum("bvutyx,bsutyx->bsvyx", kernel, neighbourhood) # (B, S, C', H, W)
    return ((sample_attention + 1).unsqueeze(2) * per_sample).sum(1)


def lsdfn(
    features: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    position_attention: torch.Tensor,
    sample_attention: torch.Tensor,
    sample_stride: int = 1,
    position_attention_at: str = "output",
) -> torch.Tensor:
    """LS-DFN fast path: sums the attention-weighted samples before applying the shared kernel.

    Same arguments and result as :func:`lsdfn_reference` (see the module docstring); never builds
    the s*s*k*k neighbourhood. Reduced-precision inputs accumulate the samples in float32.
    """
    b, c, co, h, w, k, s = _check_inputs(
        features, u, v, position_attention, sample_attention, sample_stride, position_attention_at
    )
    g, r, half, kk = sample_stride, (s - 1) // 2, (k - 1) // 2, k * k
    dtype = features.dtype
    acc_dtype = torch.promote_types(dtype, torch.float32)
    pad = r * g + half

    # Channels-last padded features; weights[b, y, x, ab, t] of every sample (and tap, for
    # position attention read at the sample) -- see _WindowSum.
    fp = nnf.pad(features, (pad, pad, pad, pad)).permute(0, 2, 3, 1).contiguous()
    sample_w = (sample_attention + 1).permute(0, 2, 3, 1)                   # (B, H, W, S)
    if position_attention_at == "sample":
        pos_p = (nnf.pad(position_attention, (r * g,) * 4) + 1).permute(0, 2, 3, 1)  # (B, H+2rg, W+2rg, K)
        weights = torch.stack([pos_p[:, a * g: a * g + h, bb * g: bb * g + w] for a in range(s) for bb in range(s)], 3)
        weights = weights * sample_w.unsqueeze(-1)                           # (B, H, W, S, K)
    else:
        weights = sample_w.unsqueeze(-1)                                     # (B, H, W, S, 1)
    rows = lsdfn_window_rows(features.device, h, w, kk, c)
    if torch.is_grad_enabled() and (fp.requires_grad or weights.requires_grad):
        acc = _WindowSum.apply(fp, weights, s, k, g, h, w, rows)
    else:
        acc = _window_sum(fp, weights, s, k, g, h, w, rows)
    gathered = acc.to(dtype)                                                 # (B, H, W, K, C)

    # Channel mixing with U per position (one batched C' x C by C x K matmul; free of copies when u
    # is channels-last in memory, as LSDFN produces it), then V (and A) over taps, plus the 1/C
    # centre residual.
    u_rows = u.permute(0, 3, 4, 1, 2).reshape(b * h * w, co, c)
    z = torch.bmm(u_rows, gathered.view(b * h * w, kk, c).transpose(1, 2)).view(b, h, w, co, kk)
    vt = v.permute(0, 3, 4, 1, 2)                                            # (B, H, W, C', K)
    residual = gathered[..., half * k + half, :].sum(-1, keepdim=True) / c   # (B, H, W, 1)
    if position_attention_at == "output":
        pos = (position_attention + 1).permute(0, 2, 3, 1)                  # (B, H, W, K)
        vt = vt * pos.unsqueeze(-2)
        residual = residual * pos[..., half * k + half: half * k + half + 1]
    out = (z * vt).sum(-1) + residual                                        # (B, H, W, C')
    return out.permute(0, 3, 1, 2).contiguous()


def _windows(fp: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Zero-copy view windows[b, oy, ox, y, x, u] = fp[b, oy + y, ox + x, u] of every H x W window."""
    return fp.unfold(1, h, 1).unfold(2, w, 1).permute(0, 1, 2, 4, 5, 3)


# On the CPU the sample sum accumulates this many elements of G at a time (see lsdfn_window_rows).
_CPU_TILE_NUMEL = 2**20


def lsdfn_window_rows(device: torch.device, height: int, width: int, taps: int, channels: int) -> int:
    """How many rows of output positions the fast path's sample sum (G, see the module docstring)
    accumulates at a time: all ``height`` rows in one pass over the s*s samples, or on the CPU row
    tiles of about 2**20 elements of G (4 MiB in float32; at least one row) so that the accumulator
    stays in cache while the s*s samples are added to it.

    A pure function of the device type, the shapes and whether torch.compile / torch.export is
    tracing (then all rows: one pass of s*s nodes rather than s*s per tile; the compiler schedules
    memory itself). CUDA and every other device: all rows (one kernel per sample, no cache to keep).
    Measured on this project's CPU (2-core AMD EPYC, torch 2.14.1, one thread, CPU time, loaded
    machine, 2026-12-06; ``python benchmarks/ops.py --only lsdfn --threads 1 --clock cpu``): at the
    FlowNet setting (C=256, C'=24, k=3, s=9, gamma=2, 48x64; 147,456 elements of G per row, so 7-row
    tiles) the whole op takes 93 ms with tiles against 210 ms in one pass (2.25x), at the DeepLab
    setting (s=5, gamma=3, 41x41; 11-row tiles) 23.5 against 36 ms (1.53x). Tile heights from 1 row
    to all: ``python benchmarks/dispatch_crossover.py --family lsdfn``.
    """
    if device.type != "cpu" or torch.compiler.is_compiling():
        return height
    return max(1, min(height, _CPU_TILE_NUMEL // max(1, width * taps * channels)))


def _window_sum(fp: torch.Tensor, weights: torch.Tensor, s: int, k: int, g: int, h: int, w: int,
                rows: int | None = None) -> torch.Tensor:
    """G[b, y, x, t, u] = sum_ab weights[b, y, x, ab, t or 0] * fp[b, y + a*g + i, x + bb*g + j, u].

    fp (B, H + (s-1)g + k-1, W + (s-1)g + k-1, C) channels-last padded features; weights
    (B, H, W, s*s, k*k or 1); result (B, H, W, k*k, C) in at least float32. ``rows``: output rows per
    tile (default all; see :func:`lsdfn_window_rows`), each tile sums all s*s samples before the next.
    """
    b, c = fp.shape[0], fp.shape[-1]
    side = k if weights.shape[-1] > 1 else 1
    rows = h if rows is None else rows
    windows = _windows(fp, h, w)
    acc = fp.new_zeros((b, h, w, k, k, c), dtype=torch.promote_types(fp.dtype, torch.float32))
    for y0 in range(0, h, rows):
        y1 = min(y0 + rows, h)
        tile = acc[:, y0:y1]
        for a in range(s):
            for bb in range(s):
                taps = windows[:, a * g: a * g + k, bb * g: bb * g + k, y0:y1].permute(0, 3, 4, 1, 2, 5)
                tile.addcmul_(weights[:, y0:y1, :, a * s + bb].view(b, y1 - y0, w, side, side, 1), taps)
    return acc.view(b, h, w, k * k, c)


class _WindowSum(torch.autograd.Function):
    """:func:`_window_sum` with a hand-written backward.

    Autograd through the overlapping window view would materialise a zero tensor of the whole
    (2p+1)^2 x H x W x C view for every one of the s*s slices (tens of seconds per step at FlowNet
    sizes); here the input gradient is accumulated in a (H + (s-1)g, W + (s-1)g, k*k, C) buffer by
    plain slice additions and folded onto the padded input once per tap.
    """

    @staticmethod
    def forward(ctx, fp: torch.Tensor, weights: torch.Tensor, s: int, k: int, g: int, h: int, w: int,
                rows: int) -> torch.Tensor:
        ctx.save_for_backward(fp, weights)
        ctx.sizes = (s, k, g, h, w)
        return _window_sum(fp, weights, s, k, g, h, w, rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        fp, weights = ctx.saved_tensors
        s, k, g, h, w = ctx.sizes
        b, c = fp.shape[0], fp.shape[-1]
        side = k if weights.shape[-1] > 1 else 1
        grad = grad.view(b, h, w, k, k, c)
        windows = _windows(fp, h, w)
        hs, ws = h + (s - 1) * g, w + (s - 1) * g
        grad_taps = grad.new_zeros((b, hs, ws, k, k, c)) if ctx.needs_input_grad[0] else None
        grad_weights = grad.new_empty(weights.shape) if ctx.needs_input_grad[1] else None
        for a in range(s):
            for bb in range(s):
                wt = weights[:, :, :, a * s + bb].view(b, h, w, side, side, 1)
                if grad_taps is not None:
                    grad_taps[:, a * g: a * g + h, bb * g: bb * g + w].addcmul_(grad, wt)
                if grad_weights is not None:
                    taps = windows[:, a * g: a * g + k, bb * g: bb * g + k].permute(0, 3, 4, 1, 2, 5)
                    prod = (grad * taps).sum(-1).view(b, h, w, k * k)
                    grad_weights[:, :, :, a * s + bb] = prod if side > 1 else prod.sum(-1, keepdim=True)
        grad_fp = None
        if grad_taps is not None:
            grad_fp = grad.new_zeros(fp.shape)
            for i in range(k):
                for j in range(k):
                    grad_fp[:, i: i + hs, j: j + ws] += grad_taps[:, :, :, i, j]
            grad_fp = grad_fp.to(fp.dtype)
        if grad_weights is not None:
            grad_weights = grad_weights.to(weights.dtype)
        return grad_fp, grad_weights, None, None, None, None, None, None


class LSDFN(nn.Module):
    """LS-DFN layer: feature, kernel and attention branches on ``x`` followed by :func:`lsdfn`.

    ``x`` (B, in_channels, H, W) -> (B, out_channels, H, W). See the module docstring for the
    formula and the interpretation choices; the paper's settings are C' = 24, k = 3 with
    (s, gamma) = (5, 3) for DeepLab and (7 or 9, 2) for FlowNet.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        samples_per_side: int = 5,
        sample_stride: int = 3,
        *,
        feature_kernel_size: int | None = 1,
        kernel_branch_kernel_size: int = 1,
        attention_kernel_size: int = 3,
        position_attention_at: str = "output",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("kernel_size", kernel_size), ("samples_per_side", samples_per_side),
                          ("kernel_branch_kernel_size", kernel_branch_kernel_size),
                          ("attention_kernel_size", attention_kernel_size)):
            if not isinstance(val, int) or val < 1 or val % 2 == 0:
                raise ValueError(f"{name} must be a positive odd int, got {val!r}")
        if feature_kernel_size is not None and (
            not isinstance(feature_kernel_size, int) or feature_kernel_size < 1 or feature_kernel_size % 2 == 0
        ):
            raise ValueError(f"feature_kernel_size must be a positive odd int or None, got {feature_kernel_size!r}")
        if not isinstance(sample_stride, int) or sample_stride < 1:
            raise ValueError(f"sample_stride must be a positive int, got {sample_stride!r}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got {in_channels} -> {out_channels}")
        if position_attention_at not in _ATTENTION_AT:
            raise ValueError(f"position_attention_at must be one of {_ATTENTION_AT}, got {position_attention_at!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.samples_per_side, self.sample_stride = kernel_size, samples_per_side, sample_stride
        self.position_attention_at = position_attention_at
        fk = {"device": device, "dtype": dtype}

        def conv(cout: int, ks: int) -> nn.Conv2d:
            return nn.Conv2d(in_channels, cout, ks, padding=ks // 2, **fk)

        self.feature = nn.Identity() if feature_kernel_size is None else conv(in_channels, feature_kernel_size)
        self.kernel_u = conv(out_channels * in_channels, kernel_branch_kernel_size)
        self.kernel_v = conv(out_channels * kernel_size**2, kernel_branch_kernel_size)
        self.position_attention = conv(kernel_size**2, attention_kernel_size)
        self.sample_attention = conv(samples_per_side**2, attention_kernel_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default init for the feature conv and U; zeros for V and both attentions (pure residual start)."""
        if isinstance(self.feature, nn.Conv2d):
            self.feature.reset_parameters()
        self.kernel_u.reset_parameters()
        for m in (self.kernel_v, self.position_attention, self.sample_attention):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(features, u, v, position_attention, sample_attention) in the layouts of :func:`lsdfn`.

        U (C'*C channels, the largest tensor of the layer) is computed channels-last so that the
        per-position channel mixing in :func:`lsdfn` reads it without a transposing copy.
        """
        b, _, h, w = x.shape
        co, c, kk = self.out_channels, self.in_channels, self.kernel_size**2
        return (
            self.feature(x),
            self.kernel_u(x.contiguous(memory_format=torch.channels_last)).view(b, co, c, h, w),
            self.kernel_v(x).view(b, co, kk, h, w),
            self.position_attention(x),
            self.sample_attention(x),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        check_floating(x, "x")
        return lsdfn(*self.branches(x), self.sample_stride, self.position_attention_at)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"samples_per_side={self.samples_per_side}, sample_stride={self.sample_stride}, "
                f"position_attention_at={self.position_attention_at!r}")
