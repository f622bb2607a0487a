"""The formulations ops trace under torch.export (zoo.ops.dynamic_filter): equal to the eager fast path."""
from __future__ import annotations

import pytest
import torch

from zoo.ops.dynamic_filter import _per_sample_conv2d_unfold, dynamic_local_filter, per_sample_conv2d

CASES = [  # batch, in, out, groups, kernel, stride, padding, dilation, H, W
    (2, 4, 6, 1, 3, 1, 1, 1, 9, 7),
    (3, 6, 6, 3, 3, 2, 1, 1, 10, 11),
    (1, 4, 8, 2, (3, 2), 1, "same", 2, 8, 9),
    (2, 4, 4, 4, 5, 2, (2, 1), 1, 13, 12),
    (2, 4, 4, 1, 3, 1, "valid", 1, 7, 7),
    (2, 4, 4, 1, 2, 1, "same", 1, 7, 6),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_per_sample_conv2d_unfold_equals_the_grouped_conv(case):
    batch, cin, cout, groups, kernel, stride, padding, dilation, h, w = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(batch, cout, cin // groups, kh, kw, generator=g, dtype=torch.float64)
    bias = torch.randn(batch, cout, generator=g, dtype=torch.float64)
    expected = per_sample_conv2d(x, weight, bias, stride, padding, dilation, groups)
    got = _per_sample_conv2d_unfold(x, weight, bias, stride, padding, dilation, groups)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_per_sample_conv2d_unfold(x, weight, None, stride, padding, dilation, groups),
                               per_sample_conv2d(x, weight, None, stride, padding, dilation, groups))


class _Mixture(torch.nn.Module):
    def forward(self, x, weight):
        return per_sample_conv2d(x, weight, None, 1, 1, 1, 2)


class _Local(torch.nn.Module):
    def forward(self, x, filters):
        return dynamic_local_filter(x, filters, 3, dilation=2, softmax=True)


def test_exported_graphs_use_the_export_formulations_and_agree():
    x, weight = torch.randn(3, 4, 6, 5), torch.randn(3, 6, 2, 3, 3)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(_Mixture(), (x, weight), dynamic_shapes=({0: batch}, {0: batch}))
    convs = [n for n in exported.graph.nodes if "conv" in str(n.target)]
    assert not convs  # no batch-sized group count left in the graph
    torch.testing.assert_close(exported.module()(x[:2], weight[:2]), _Mixture()(x[:2], weight[:2]))

    x, filters = torch.randn(2, 3, 7, 9), torch.randn(2, 9, 7, 9)
    exported = torch.export.export(_Local(), (x, filters))
    assert len(exported.graph.nodes) < 30  # the eager path would unroll into 9 slices + multiply-adds
    torch.testing.assert_close(exported.module()(x, filters), _Local()(x, filters), rtol=1e-5, atol=1e-6)
