"""Warm start (zoo.checkpoints.warm_start), weight averaging (zoo.checkpoints.average_checkpoints and
scripts/average_checkpoints.py) and the BatchNorm statistics of an average (zoo.training.recompute_batchnorm).
The training runs: tests/test_training.py."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoo.checkpoints import average_checkpoints
from zoo.errors import WeightsError
from zoo.training import FlowStream, recompute_batchnorm, training_transforms

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- warm start
def test_warm_start_copies_matching_tensors_and_reports_the_rest(tmp_path):
    import zoo
    from safetensors.torch import save_file
    from zoo.training import warm_start

    torch.manual_seed(1)
    source = zoo.create("flownets", width=0.0625).state_dict()   # 6-channel conv1, no correlation branch
    save_file({k: v.contiguous() for k, v in source.items()}, tmp_path / "flownets.safetensors")
    torch.manual_seed(2)
    model = zoo.create("flownetc", width=0.0625)
    fresh = copy.deepcopy(model.state_dict())
    report = warm_start(model, str(tmp_path / "flownets.safetensors"))
    ours = model.state_dict()
    assert report["kept"]["conv1.0.weight"].startswith("shape ") and "conv_redir.0.weight" in report["kept"]
    assert report["kept"]["conv_redir.0.weight"] == "not in source"
    for k in report["copied"]:
        assert torch.equal(ours[k], source[k])
    for k in report["kept"]:
        assert torch.equal(ours[k], fresh[k])
    assert set(report["copied"]) | set(report["kept"]) == set(ours)
    assert 0 < report["copied_parameters"] < report["total_parameters"] == sum(p.numel() for p in model.parameters())

    lsdfn = zoo.create("flownetc-lsdfn-small")                      # registry weights of the FlowNetS sibling
    sibling_tag = zoo.model_info("flownets-lsdfn-small").default_tag
    report = warm_start(lsdfn, f"flownets-lsdfn-small.{sibling_tag}")
    assert report["copied_parameters"] > 0.9 * report["total_parameters"]
    trained = zoo.create("flownets-lsdfn-small", pretrained=sibling_tag).state_dict()
    assert "lsdfn.kernel_u.weight" in report["copied"]
    assert torch.equal(lsdfn.state_dict()["lsdfn.kernel_u.weight"], trained["lsdfn.kernel_u.weight"])

    with pytest.raises(ValueError, match="neither a file nor MODEL.TAG"):
        warm_start(model, str(tmp_path / "missing"))
    save_file({"unrelated": torch.zeros(3)}, tmp_path / "unrelated.safetensors")
    with pytest.raises(ValueError, match="no tensor matches"):
        warm_start(model, str(tmp_path / "unrelated.safetensors"))


def test_warm_start_expands_plain_flownet_weights_into_the_lsdfn_network(tmp_path):
    from safetensors.torch import save_file

    import zoo
    from zoo.training import warm_start

    torch.manual_seed(3)
    plain = zoo.create("flownets", width=0.125, batch_norm=True)
    with torch.no_grad():                      # non-trivial BN statistics, so eval outputs depend on them
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, tmp_path / "plain.safetensors")
    torch.manual_seed(4)
    lsdfn = zoo.create("flownets", width=0.125, batch_norm=True,
                       lsdfn={"out_channels": 5, "kernel_size": 3, "samples_per_side": 3, "sample_stride": 2})
    report = warm_start(lsdfn, str(tmp_path / "plain.safetensors"))
    assert set(report["expanded"]) == {"conv4.0.weight", "predict_flow3.weight", "deconv2.0.weight"}
    assert all(k.startswith("lsdfn.") for k in report["kept"])
    ours, theirs = lsdfn.state_dict(), plain.state_dict()
    c = plain.conv3_1[0].out_channels
    assert torch.equal(ours["conv4.0.weight"][:, :c], theirs["conv4.0.weight"][:, :c])
    assert torch.equal(ours["conv4.0.weight"][:, c + 5:], theirs["conv4.0.weight"][:, c:])
    assert not ours["predict_flow3.weight"][:, c:c + 5].any() and not ours["deconv2.0.weight"][c:c + 5].any()
    x = torch.randn(2, 6, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(lsdfn(x), plain(x), rtol=1e-4, atol=1e-5)
        assert lsdfn.lsdfn(lsdfn.conv3_1(lsdfn.conv3(lsdfn.conv2(lsdfn.conv1(x))))).abs().sum() > 0

    report = warm_start(plain, str(tmp_path / "plain.safetensors"))   # no inserted channels: plain copy
    assert report["expanded"] == {} and report["kept"] == {}


# --------------------------------------------------------------------------------- weight averaging
def _states(n):
    g = torch.Generator().manual_seed(0)
    return [{"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "bn.running_var": torch.rand(4, generator=g),
             "bn.num_batches_tracked": torch.tensor(10 * (i + 1))} for i in range(n)]


def test_average_checkpoints_is_the_mean_of_pt_and_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    states = _states(3)
    paths = []
    for i, state in enumerate(states):                 # a training checkpoint, then safetensors files
        path = tmp_path / (f"checkpoint-{i:07d}.pt" if i == 0 else f"w{i}.safetensors")
        torch.save({"model": state, "step": i}, path) if i == 0 else save_file(state, str(path))
        paths.append(path)
    avg = average_checkpoints(paths)
    for key in ("conv.weight", "bn.running_var"):
        expected = (states[0][key].double() + states[1][key].double() + states[2][key].double()) / 3
        assert avg[key].dtype == torch.float32
        torch.testing.assert_close(avg[key], expected.float(), rtol=0, atol=1e-7)
    assert int(avg["bn.num_batches_tracked"]) == 30            # integer tensors: from the last file
    half = average_checkpoints(paths, dtype=torch.float16)
    assert half["conv.weight"].dtype == torch.float16 and half["bn.num_batches_tracked"].dtype == torch.int64
    torch.testing.assert_close(half["conv.weight"].float(), avg["conv.weight"], rtol=1e-3, atol=1e-3)


def test_average_checkpoints_lists_mismatched_keys_and_shapes(tmp_path):
    from safetensors.torch import save_file

    a, b = _states(2)
    b["conv.weight"] = torch.zeros(4, 3, 1, 1)
    b["extra.bias"] = torch.zeros(2)
    del b["bn.running_var"]
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    with pytest.raises(WeightsError, match=r"missing \['bn.running_var'\].*unexpected \['extra.bias'\].*conv.weight"):
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(WeightsError, match="at least one"):
        average_checkpoints([])


def test_average_checkpoints_script_writes_a_loadable_file(tmp_path):
    from safetensors.torch import save_file

    paths = []
    for i, state in enumerate(_states(2)):
        paths.append(tmp_path / f"w{i}.safetensors")
        save_file(state, str(paths[-1]))
    out = tmp_path / "avg.safetensors"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "average_checkpoints.py"), "--out", str(out), "--dtype",
                    "float16", *map(str, paths)], check=True, capture_output=True, cwd=ROOT)
    avg = load_file(str(out))
    expected = (load_file(str(paths[0]))["conv.weight"] + load_file(str(paths[1]))["conv.weight"]) / 2
    assert avg["conv.weight"].dtype == torch.float16
    torch.testing.assert_close(avg["conv.weight"].float(), expected, rtol=1e-3, atol=1e-3)


def _tiny_bn_flownet():
    import zoo

    torch.manual_seed(0)
    return zoo.create("flownets", width=0.0625, batch_norm=True)


def test_recompute_batchnorm_sets_the_mean_of_the_batch_statistics():
    from zoo.data import FlyingShapes

    model = _tiny_bn_flownet()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.running_mean.fill_(5.0)
    assert not model.training
    count = recompute_batchnorm(model, "flying-shapes", batches=2, batch_size=2, size=(64, 64), seed=7,
                                textures="procedural")
    assert count == len(norms) and not model.training and all(m.momentum == 0.1 for m in norms)
    # by hand: conv1's batch statistics on positions 0-1 and 2-3 of the seed-7 stream, averaged
    stream = FlowStream(FlyingShapes(size=(64, 64), seed=7, textures="procedural"), 7, (64, 64))
    tf = training_transforms(model)
    means, variances = [], []
    with torch.no_grad():
        for positions in ([0, 1], [2, 3]):
            samples = stream.__getitems__(positions)
            x = tf((torch.stack([s["image1"] for s in samples]), torch.stack([s["image2"] for s in samples])))
            y = model.conv1[0](x)
            means.append(y.mean((0, 2, 3)))
            variances.append(y.transpose(0, 1).flatten(1).var(1, unbiased=True))
    torch.testing.assert_close(model.conv1[1].running_mean, (means[0] + means[1]) / 2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.conv1[1].running_var, (variances[0] + variances[1]) / 2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        import zoo

        recompute_batchnorm(zoo.create("flownets", width=0.0625), "flying-shapes", size=(64, 64))


def test_average_checkpoints_script_recomputes_batchnorm_statistics(tmp_path):
    from safetensors.torch import save_file

    model = _tiny_bn_flownet()
    paths = []
    for i in range(2):
        state = {k: v + 0.01 * i if v.is_floating_point() else v for k, v in model.state_dict().items()}
        paths.append(tmp_path / f"w{i}.safetensors")
        save_file(state, str(paths[-1]))
    out = tmp_path / "avg.safetensors"
    bn_args = ["--model", "flownets", "--arch-override", "width=0.0625", "--arch-override", "batch_norm=true",
               "--bn-data", "flying-shapes", "--size", "64", "64", "--bn-batches", "2", "--bn-batch-size", "2",
               "--bn-seed", "3", "--textures", "procedural"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "average_checkpoints.py"), "--out", str(out), *bn_args,
                    *map(str, paths)], check=True, capture_output=True, cwd=ROOT)
    got = load_file(str(out))
    plain = average_checkpoints(paths)
    torch.testing.assert_close(got["conv2.0.weight"], plain["conv2.0.weight"])
    assert not torch.allclose(got["conv2.1.running_mean"], plain["conv2.1.running_mean"])
    model.load_state_dict(plain)
    recompute_batchnorm(model, "flying-shapes", batches=2, batch_size=2, size=(64, 64), seed=3, textures="procedural")
    torch.testing.assert_close(got["conv2.1.running_mean"], model.conv2[1].running_mean)
    torch.testing.assert_close(got["conv2.1.running_var"], model.conv2[1].running_var)
    no_model = subprocess.run([sys.executable, str(ROOT / "scripts" / "average_checkpoints.py"), "--out", str(out),
                               "--bn-data", "flying-shapes", *map(str, paths)], capture_output=True, text=True, cwd=ROOT)
    assert no_model.returncode == 2 and "--bn-data needs --model" in no_model.stderr
