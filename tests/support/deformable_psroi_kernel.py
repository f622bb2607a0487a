"""A line-by-line Python port of the authors' deformable PS RoI pooling CUDA kernels, kept as a test oracle
for zoo.ops.deform_ps_roi_pool.deform_ps_roi_pool.

Source (MIT): msracver/Deformable-ConvNets@6aeda878a95bcb55eadffbe125804e730574de8d:
rfcn/operator_cxx/deformable_psroi_pooling.cu, ``DeformablePSROIPoolForwardKernel`` and
``DeformablePSROIPoolBackwardAccKernel`` with the launcher's derived sizes (``num_classes`` =
trans.size(1) / 2, ``channels_each_class`` = output_dim / num_classes, 1 and output_dim when
``no_trans``). Each CUDA thread's body is one iteration over the flat output index, on flat Python lists
with the kernel's pointer arithmetic (the sample loop both kernels share is written once, ``_used_samples``);
the arithmetic is Python's (float64), so compare in float64.
Nothing here imports zoo.
"""
from __future__ import annotations

import math

import torch


def _c_round(v: float) -> float:
    """C's round(): halves away from zero."""
    whole = math.floor(abs(v))
    return math.copysign(whole + (abs(v) - whole >= 0.5), v)


def _bilinear_interp(data: list, base: int, x: float, y: float, width: int) -> float:
    x1, x2, y1, y2 = math.floor(x), math.ceil(x), math.floor(y), math.ceil(y)
    dist_x, dist_y = x - x1, y - y1
    value11 = data[base + y1 * width + x1]
    value12 = data[base + y2 * width + x1]
    value21 = data[base + y1 * width + x2]
    value22 = data[base + y2 * width + x2]
    return ((1 - dist_x) * (1 - dist_y) * value11 + (1 - dist_x) * dist_y * value12
            + dist_x * (1 - dist_y) * value21 + dist_x * dist_y * value22)


def _launch(data, rois, trans, spatial_scale, output_dim, pooled_size, part_size, sample_per_part, trans_std):
    """What the launchers hand the kernels: flat inputs and the derived sizes."""
    no_trans = trans is None
    return dict(
        bottom_data=data.double().flatten().tolist(), bottom_rois=rois.double().flatten().tolist(),
        bottom_trans=None if no_trans else trans.double().flatten().tolist(), no_trans=no_trans,
        spatial_scale=spatial_scale, channels=data.shape[1], height=data.shape[2], width=data.shape[3],
        pooled_height=pooled_size, pooled_width=pooled_size, output_dim=output_dim, trans_std=trans_std,
        sample_per_part=sample_per_part, part_size=part_size or pooled_size,
        num_classes=1 if no_trans else trans.shape[1] // 2,
        channels_each_class=output_dim if no_trans else output_dim // (trans.shape[1] // 2),
        count=rois.shape[0] * output_dim * pooled_size * pooled_size)


def _geometry(index, bottom_rois, bottom_trans, no_trans, spatial_scale, pooled_height, pooled_width, output_dim,
              trans_std, sample_per_part, part_size, num_classes, channels_each_class, **_):
    """The shared prologue of both kernels: from the flat output index to the bin's start and sizes."""
    pw = index % pooled_width
    ph = (index // pooled_width) % pooled_height
    ctop = (index // pooled_width // pooled_height) % output_dim
    n = index // pooled_width // pooled_height // output_dim

    offset_bottom_rois = n * 5
    roi_batch_ind = int(bottom_rois[offset_bottom_rois + 0])
    roi_start_w = _c_round(bottom_rois[offset_bottom_rois + 1]) * spatial_scale - 0.5
    roi_start_h = _c_round(bottom_rois[offset_bottom_rois + 2]) * spatial_scale - 0.5
    roi_end_w = (_c_round(bottom_rois[offset_bottom_rois + 3]) + 1.0) * spatial_scale - 0.5
    roi_end_h = (_c_round(bottom_rois[offset_bottom_rois + 4]) + 1.0) * spatial_scale - 0.5

    roi_width = max(roi_end_w - roi_start_w, 0.1)
    roi_height = max(roi_end_h - roi_start_h, 0.1)

    bin_size_h = roi_height / pooled_height
    bin_size_w = roi_width / pooled_width
    sub_bin_size_h = bin_size_h / sample_per_part
    sub_bin_size_w = bin_size_w / sample_per_part

    part_h = math.floor(ph / pooled_height * part_size)
    part_w = math.floor(pw / pooled_width * part_size)
    class_id = ctop // channels_each_class
    trans_x_index = (((n * num_classes + class_id) * 2) * part_size + part_h) * part_size + part_w
    trans_y_index = (((n * num_classes + class_id) * 2 + 1) * part_size + part_h) * part_size + part_w
    trans_x = 0.0 if no_trans else bottom_trans[trans_x_index] * trans_std
    trans_y = 0.0 if no_trans else bottom_trans[trans_y_index] * trans_std

    wstart = pw * bin_size_w + roi_start_w
    wstart += trans_x * roi_width
    hstart = ph * bin_size_h + roi_start_h
    hstart += trans_y * roi_height
    return dict(pw=pw, ph=ph, ctop=ctop, n=n, roi_batch_ind=roi_batch_ind, roi_width=roi_width,
                roi_height=roi_height, sub_bin_size_h=sub_bin_size_h, sub_bin_size_w=sub_bin_size_w,
                wstart=wstart, hstart=hstart, trans_x_index=trans_x_index, trans_y_index=trans_y_index)


def _group(p: int, group_size: int, pooled: int) -> int:
    return min(max(math.floor(p * group_size / pooled), 0), group_size - 1)


def _used_samples(b: dict, sample_per_part: int, group_size: int, pooled_size: int, height: int, width: int):
    """The sample loop both kernels share: yields (w, h, c), the clamped position of every sample inside
    the map and the input channel, and skips the others."""
    gw = _group(b["pw"], group_size, pooled_size)
    gh = _group(b["ph"], group_size, pooled_size)
    for ih in range(sample_per_part):
        for iw in range(sample_per_part):
            w = b["wstart"] + iw * b["sub_bin_size_w"]
            h = b["hstart"] + ih * b["sub_bin_size_h"]
            if w < -0.5 or w > width - 0.5 or h < -0.5 or h > height - 0.5:
                continue
            w = min(max(w, 0.0), width - 1.0)
            h = min(max(h, 0.0), height - 1.0)
            c = (b["ctop"] * group_size + gh) * group_size + gw
            yield w, h, c


def forward(data: torch.Tensor, rois: torch.Tensor, trans: torch.Tensor | None, *, spatial_scale: float,
            output_dim: int, group_size: int, pooled_size: int, part_size: int = 0, sample_per_part: int = 1,
            trans_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``DeformablePSROIPoolForward``: returns (top_data, top_count), each (R, output_dim, P, P) float64.
    ``trans`` None is ``no_trans=True``; ``part_size`` 0 means ``pooled_size`` (the operator's default)."""
    k = _launch(data, rois, trans, spatial_scale, output_dim, pooled_size, part_size, sample_per_part, trans_std)
    bottom_data, channels, height, width, count = (k[n] for n in ("bottom_data", "channels", "height", "width",
                                                                  "count"))
    top_data, top_count = [0.0] * count, [0.0] * count

    for index in range(count):  # CUDA_KERNEL_LOOP(index, count)
        b = _geometry(index, **k)
        total = 0.0
        cnt = 0
        offset_bottom_data = (b["roi_batch_ind"] * channels) * height * width
        for w, h, c in _used_samples(b, sample_per_part, group_size, pooled_size, height, width):
            val = _bilinear_interp(bottom_data, offset_bottom_data + c * height * width, w, h, width)
            total += val
            cnt += 1
        top_data[index] = 0.0 if cnt == 0 else total / cnt
        top_count[index] = cnt
    shape = (rois.shape[0], output_dim, pooled_size, pooled_size)
    return (torch.tensor(top_data, dtype=torch.float64).view(shape),
            torch.tensor(top_count, dtype=torch.float64).view(shape))


def backward(top_diff: torch.Tensor, top_count: torch.Tensor, data: torch.Tensor, rois: torch.Tensor,
             trans: torch.Tensor | None, *, spatial_scale: float, output_dim: int, group_size: int,
             pooled_size: int, part_size: int = 0, sample_per_part: int = 1,
             trans_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``DeformablePSROIPoolBackwardAcc``: returns (data gradient, trans gradient or None), float64."""
    k = _launch(data, rois, trans, spatial_scale, output_dim, pooled_size, part_size, sample_per_part, trans_std)
    bottom_data, channels, height, width, count = (k[n] for n in ("bottom_data", "channels", "height", "width",
                                                                  "count"))
    no_trans = k["no_trans"]
    diff = top_diff.double().flatten().tolist()
    counts = top_count.double().flatten().tolist()
    bottom_data_diff = [0.0] * len(bottom_data)
    bottom_trans_diff = None if no_trans else [0.0] * len(k["bottom_trans"])

    for index in range(count):
        b = _geometry(index, **k)
        if counts[index] <= 0:
            continue
        diff_val = diff[index] / counts[index]
        offset_bottom_data = b["roi_batch_ind"] * channels * height * width
        for w, h, c in _used_samples(b, sample_per_part, group_size, pooled_size, height, width):
            x0, x1, y0, y1 = math.floor(w), math.ceil(w), math.floor(h), math.ceil(h)
            dist_x, dist_y = w - x0, h - y0
            q00 = (1 - dist_x) * (1 - dist_y)
            q01 = (1 - dist_x) * dist_y
            q10 = dist_x * (1 - dist_y)
            q11 = dist_x * dist_y
            base = offset_bottom_data + c * height * width
            bottom_data_diff[base + y0 * width + x0] += q00 * diff_val
            bottom_data_diff[base + y1 * width + x0] += q01 * diff_val
            bottom_data_diff[base + y0 * width + x1] += q10 * diff_val
            bottom_data_diff[base + y1 * width + x1] += q11 * diff_val
            if no_trans:
                continue
            u00 = bottom_data[base + y0 * width + x0]
            u01 = bottom_data[base + y1 * width + x0]
            u10 = bottom_data[base + y0 * width + x1]
            u11 = bottom_data[base + y1 * width + x1]
            diff_x = (u11 * dist_y + u10 * (1 - dist_y) - u01 * dist_y - u00 * (1 - dist_y)) * trans_std * diff_val
            diff_x *= b["roi_width"]
            diff_y = (u11 * dist_x + u01 * (1 - dist_x) - u10 * dist_x - u00 * (1 - dist_x)) * trans_std * diff_val
            diff_y *= b["roi_height"]
            bottom_trans_diff[b["trans_x_index"]] += diff_x
            bottom_trans_diff[b["trans_y_index"]] += diff_y
    grad_data = torch.tensor(bottom_data_diff, dtype=torch.float64).view(data.shape)
    grad_trans = None if no_trans else torch.tensor(bottom_trans_diff, dtype=torch.float64).view(trans.shape)
    return grad_data, grad_trans
