"""zoo.cards.stats: parameter and FLOP counts computed from the models, and the shipped model_stats.json."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import zoo
import zoo.cards.stats as S
from conftest import SMALL_ENTRY
from zoo.errors import ZooError
from zoo.registry import default_registry, parse_entry

SHIPPED = [i.name for i in default_registry() if i.source == "registry.yaml"]


# ---------------------------------------------------------------------------------- the shipped file
def test_stats_file_covers_the_registry_and_is_current():
    assert S.stats_problems() == []


@pytest.mark.parametrize("name", SHIPPED)
def test_cached_params_match_a_recount_on_meta(name):
    info = zoo.model_info(name)
    cached = S.load_cache()[name]
    assert cached.params == S.count_parameters(info)
    assert cached.input_size == tuple(info.input_size) and cached.flops > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_cached_flops_match_a_recount(name):
    info = zoo.model_info(name)
    cached = S.load_cache()[name]
    assert S.count_flops(info) == (cached.flops, cached.device)


def test_stale_missing_and_orphan_entries_are_reported(tmp_path):
    doc = json.loads(S.stats_path().read_text())
    first, *rest = sorted(doc["models"])
    doc["models"][first]["fingerprint"] = "0" * 16
    if rest:
        del doc["models"][rest[0]]
    doc["models"]["no-such-model"] = dict(doc["models"][first])
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(doc))
    problems = "\n".join(S.stats_problems(path))
    assert f"{first}: model_stats.json is stale" in problems
    assert "no-such-model: in model_stats.json but not in registry.yaml" in problems
    if rest:
        assert f"{rest[0]}: no entry in model_stats.json" in problems
    assert "scripts/sync_stats.py" in problems


def test_model_stats_reads_the_cache_without_building(monkeypatch):
    import zoo.factory

    def refuse(*args, **kwargs):
        raise AssertionError("model_stats built a model although model_stats.json has the entry")

    monkeypatch.setattr(zoo.factory, "build_model", refuse)
    monkeypatch.setattr(S, "_CACHE", None)
    for name in SHIPPED:
        assert S.model_stats(zoo.model_info(name)) == S.load_cache()[name]


# ---------------------------------------------------------------------------------- counting
class _Conv(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 4, data_dependent: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.data_dependent = data_dependent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.data_dependent:  # a data-dependent shape: cannot run on the meta device
            y = y[:, :, : int(torch.count_nonzero(y >= -1e30)) // (y.shape[1] * y.shape[3] * y.shape[0])]
        return y


class _Deform(nn.Module):
    def __init__(self):
        super().__init__()
        from zoo.ops.deform_conv import DeformConv2d

        self.dcn = DeformConv2d(4, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dcn(x)


class _Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model takes two tensors")


def _entry(user_registry, name: str, arch: str, fn, input_size: list[int], args: dict | None = None):
    zoo.register_arch(arch, fn, replace=True)
    user_registry()  # installs the fresh registry
    entry = copy.deepcopy(SMALL_ENTRY)
    entry.update(arch=arch, args=args or {}, input_size=input_size, card=f"{name}.md")
    info = parse_entry(name, entry, "tests/test_stats.py")
    default_registry().add(info, replace=True)
    return info


def test_flops_of_a_convolution_are_two_per_multiply_accumulate(user_registry):
    info = _entry(user_registry, "test-conv", "test_stats_conv", _Conv, [3, 8, 8])
    # 4 output channels x 8 x 8 positions x (3 x 3 x 3) products, 2 FLOPs each (bias not counted)
    assert S.count_flops(info) == (2 * 4 * 8 * 8 * 27, "meta")
    assert S.count_parameters(info) == 4 * 27 + 4


def test_input_size_is_used_as_given_six_channel_flow_pair(user_registry):
    info = _entry(user_registry, "test-conv6", "test_stats_conv6", _Conv, [6, 16, 24],
                  {"in_channels": 6, "out_channels": 2})
    assert S.count_flops(info) == (2 * 2 * 16 * 24 * 54, "meta")


def test_deformable_convolution_is_counted_like_a_convolution(user_registry):
    info = _entry(user_registry, "test-dcn", "test_stats_dcn", _Deform, [4, 8, 8])
    offset_conv = 2 * 18 * 64 * 36   # conv_offset: 4 -> 2*3*3 offsets, 3x3
    deform = 2 * 8 * 64 * 36         # the deformable 3x3 conv: 4 -> 8
    flops, _ = S.count_flops(info)
    assert flops == offset_conv + deform


def test_a_model_that_cannot_run_on_meta_is_counted_on_the_cpu(user_registry):
    info = _entry(user_registry, "test-dd", "test_stats_dd", _Conv, [3, 8, 8], {"data_dependent": True})
    assert S.count_flops(info) == (2 * 4 * 8 * 8 * 27, "cpu")
    stats = S.compute_stats(info)
    assert stats.device == "cpu" and stats.fingerprint == S.fingerprint(info)


def test_a_model_that_cannot_run_at_all_is_a_clear_error(user_registry):
    info = _entry(user_registry, "test-broken", "test_stats_broken", _Broken, [3, 8, 8])
    with pytest.raises(ZooError, match=r"cannot count FLOPs of 'test-broken' at input_size \[3, 8, 8\].*takes two tensors"):
        S.count_flops(info)


def test_user_entries_are_computed_once_and_follow_their_args(user_registry):
    info = _entry(user_registry, "test-conv", "test_stats_conv", _Conv, [3, 8, 8])
    first = S.model_stats(info)
    assert S.model_stats(info) is first  # memoised
    wider = _entry(user_registry, "test-conv", "test_stats_conv", _Conv, [3, 8, 8], {"out_channels": 8})
    assert S.fingerprint(wider) != S.fingerprint(info)
    assert S.model_stats(wider).flops == 2 * first.flops


def test_sync_stats_writes_a_file_that_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "model_stats.json"
    path.write_text(S.stats_path().read_text())
    assert S.sync_stats(path) == []  # current: nothing recomputed, nothing changed
    assert path.read_text() == S.stats_path().read_text()
    assert S.load_cache(path) == S.load_cache()
