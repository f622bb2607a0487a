"""Official upstream weights: download -> verify -> convert -> cache, the failure modes, mirrors, manual
imports and warm starts, against a local HTTP server standing in for the upstream host."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from support.file_server import file_server  # noqa: F401  (fixture)
from zoo.converters import register_converter
from zoo.errors import ChecksumError, OfflineError, WeightsError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def convert_orig(state_dict):
    """The test's "official layout": a {"state_dict": ...} checkpoint whose keys carry an ``orig.`` prefix."""
    sd = state_dict["state_dict"] if "state_dict" in state_dict else state_dict
    return {k.removeprefix("orig."): v for k, v in sd.items()}


register_converter("test-orig", convert_orig)


def original_checkpoint(seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A checkpoint of test-small-segnet in the test's official layout, and the zoo state dict it holds."""
    torch.manual_seed(seed)
    ours = {k: v.clone() for k, v in zoo.create("test-small-segnet").state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": {f"orig.{k}": v for k, v in ours.items()}, "epoch": 3}, buf)
    return buf.getvalue(), ours


ENTRY = {
    "task": "semantic-segmentation", "arch": "test_small_segnet", "args": {"num_classes": 5},
    "paper": "deeplabv3", "license": "apache-2.0", "card": "test-small-segnet.md", "input_size": [3, 33, 33],
    "transforms": {"preset": "segmentation", "args": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
    "postprocess": {"preset": "segmentation"}, "exportable": True,
}


def write_registry(path: Path, models: dict) -> Path:
    path.write_text(yaml.safe_dump({"schema_version": 2, "models": models}, sort_keys=False))
    return path


@pytest.fixture
def served(file_server, user_registry, tmp_path):  # noqa: F811
    """An upstream checkpoint on the local server and a user registry entry ``test-upstream`` pointing at
    it; returns (server, url, file bytes, zoo state dict)."""
    data, ours = original_checkpoint()
    sha = hashlib.sha256(data).hexdigest()
    url = file_server.add(f"/models/segnet_orig-{sha[:8]}.pth", data)
    tag = {"source": "random weights in the official layout", "license": "mit",
           "upstream": {"url": url, "sha256": sha[:8], "converter": "test-orig", "cited_from": "tests/test_upstream.py"},
           "categories": "voc", "metrics": [{"dataset": "d", "split": "s", "metric": "m", "value": 1.0, "reported": "nobody"}]}
    zoo.registry.load(write_registry(tmp_path / "mine.yaml", {"test-upstream": {**ENTRY, "weights": {"default": "orig", "tags": {"orig": tag}}}}))
    return file_server, url, data, ours


def _outputs(model):
    x = torch.randn(2, 3, 33, 41, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


# --- the path that works ----------------------------------------------------------------------------
def test_download_verify_convert_cache_then_offline(served, monkeypatch):
    server, url, data, ours = served
    model = zoo.create("test-upstream", pretrained=True)
    path = Path(server.url)  # noqa: F841
    assert server.requests[url.removeprefix(server.url)] == 1
    reference = zoo.create("test-upstream")
    reference.load_state_dict(convert_orig(torch.load(io.BytesIO(data), weights_only=True)))
    torch.testing.assert_close(_outputs(model), _outputs(reference), rtol=0, atol=0)
    assert model.weights_tag == "orig" and model.categories[:2] == ["__background__", "aeroplane"]
    # the cache: converted safetensors + sidecar naming where it came from
    folder = Path(os.environ["ZOO_CACHE"]) / "converted" / "test-upstream" / "orig"
    record = json.loads((folder / "source.json").read_text())
    assert record["url"] == url and record["converter"] == "test-orig"
    assert record["upstream_sha256"] == hashlib.sha256(data).hexdigest()[:8]
    assert record["original_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    # later loads use the conversion and never ask the server, even offline and with the server gone
    server.close()
    again = zoo.create("test-upstream", pretrained=True, local_files_only=True)
    torch.testing.assert_close(_outputs(again), _outputs(model), rtol=0, atol=0)
    assert server.requests[url.removeprefix(server.url)] == 1


def test_a_tampered_conversion_is_refused(served):
    zoo.create("test-upstream", pretrained=True)
    path = Path(os.environ["ZOO_CACHE"]) / "converted" / "test-upstream" / "orig" / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="zoo download test-upstream.orig --force"):
        zoo.create("test-upstream", pretrained=True)


def test_hash_mismatch_caches_nothing_and_names_url_and_both_hashes(served, tmp_path):
    server, url, data, _ = served
    other, _ = original_checkpoint(seed=5)
    server.files[url.removeprefix(server.url)] = other  # the host now serves another file under that name
    with pytest.raises(ChecksumError) as err:
        zoo.create("test-upstream", pretrained=True)
    msg = str(err.value)
    assert url in msg and hashlib.sha256(other).hexdigest() in msg and hashlib.sha256(data).hexdigest()[:8] in msg
    cache = Path(os.environ["ZOO_CACHE"])
    assert not list((cache / "upstream").glob("*.pth")) and not (cache / "converted").exists()


def test_server_down_names_the_url_and_the_air_gapped_recipe(served):
    server, url, _, _ = served
    server.close()
    with pytest.raises(WeightsError) as err:
        zoo.create("test-upstream", pretrained=True)
    assert url in str(err.value) and "ZOO_WEIGHTS_MIRROR" in str(err.value)
    assert not list((Path(os.environ["ZOO_CACHE"]) / "upstream").glob("*.pth"))


def test_truncated_download_is_never_used(served):
    server, url, _, _ = served
    server.truncate.add(url.removeprefix(server.url))
    with pytest.raises(WeightsError, match="nothing was cached"):
        zoo.create("test-upstream", pretrained=True)
    tags = zoo.model_info("test-upstream").weights
    no_hash = dataclasses.replace(tags["orig"], upstream=dataclasses.replace(tags["orig"].upstream, sha256=None))
    info = dataclasses.replace(zoo.model_info("test-upstream"), weights={"orig": no_hash})
    with pytest.raises(WeightsError, match="nothing was cached"):  # without an upstream hash: the file does not read
        zoo.upstream.resolve(info, "orig")
    cache = Path(os.environ["ZOO_CACHE"])
    assert not [p for p in (cache / "upstream").iterdir() if not p.name.endswith(".lock")]


def test_offline_and_not_converted_says_how(served):
    with pytest.raises(OfflineError, match="zoo download test-upstream.orig"):
        zoo.create("test-upstream", pretrained=True, local_files_only=True)


def test_mirror_directory_with_the_original_file(served, tmp_path, monkeypatch):
    server, url, data, ours = served
    server.close()
    mirror = tmp_path / "mirror"
    (mirror / "upstream").mkdir(parents=True)
    (mirror / "upstream" / url.rsplit("/", 1)[1]).write_bytes(data)
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", str(mirror))
    model = zoo.create("test-upstream", pretrained=True, local_files_only=True)
    torch.testing.assert_close(model.state_dict()["classifier.weight"], ours["classifier.weight"])
    (mirror / "upstream" / url.rsplit("/", 1)[1]).write_bytes(data[:-10])  # a bad copy in the mirror
    zoo.create("test-upstream", pretrained=True)  # the conversion is cached: the mirror is not read again
    with pytest.raises(ChecksumError, match="remove"):
        zoo.upstream.resolve(zoo.model_info("test-upstream"), "orig", force=True)


def test_two_processes_download_once(served, tmp_path):
    server, url, _, _ = served
    server.delay = 1.0
    script = textwrap.dedent(f"""
        import sys; sys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]
        import torch, zoo
        from conftest import small_segnet
        import test_upstream
        zoo.register_arch("test_small_segnet", small_segnet, replace=True)
        zoo.registry.load({str(tmp_path / "mine.yaml")!r})
        zoo.create("test-upstream", pretrained=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], env={**os.environ}, stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert server.requests[url.removeprefix(server.url)] == 1


def test_force_fetches_and_converts_again(served):
    server, url, _, _ = served
    zoo.create("test-upstream", pretrained=True)
    zoo.weights.resolve(zoo.model_info("test-upstream"), "orig", force_download=True)
    assert server.requests[url.removeprefix(server.url)] == 2


# --- manual tags and `zoo import` -----------------------------------------------------------------------
@pytest.fixture
def manual(user_registry, tmp_path):
    data, ours = original_checkpoint(seed=2)
    sha = hashlib.sha256(data).hexdigest()
    tag = {"source": "behind a login", "license": "mit", "metrics": [],
           "manual": {"page": "https://example.org/weights", "file_name": "segnet_manual.pth", "sha256": sha,
                      "converter": "test-orig"}}
    zoo.registry.load(write_registry(tmp_path / "manual.yaml", {"test-manual": {**ENTRY, "weights": {"default": "m", "tags": {"m": tag}}}}))
    path = tmp_path / "downloads" / "segnet_manual.pth"
    path.parent.mkdir()
    path.write_bytes(data)
    return path, ours


def test_manual_tag_error_then_zoo_import(manual, capsys):
    from zoo.cli import main

    path, ours = manual
    with pytest.raises(OfflineError) as err:
        zoo.create("test-manual", pretrained=True)
    msg = str(err.value)
    assert "https://example.org/weights" in msg and "segnet_manual.pth" in msg
    assert "zoo import test-manual.m PATH/segnet_manual.pth" in msg
    assert not zoo.model_info("test-manual").pretrained  # a manual tag is not obtainable by pretrained=
    bad = path.with_name("other.pth")
    bad.write_bytes(path.read_bytes()[:-3])
    assert main(["import", "test-manual.m", str(bad)]) == 2
    assert "the upstream publishes" in capsys.readouterr().err
    assert main(["import", "test-manual.m", str(path)]) == 0
    model = zoo.create("test-manual", pretrained=True, local_files_only=True)
    torch.testing.assert_close(model.state_dict()["classifier.weight"], ours["classifier.weight"])


def test_download_dry_run_lists_every_source(served, manual, capsys):
    from zoo.cli import main

    assert main(["download", "test-upstream", "--dry-run"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["kind"] == "upstream" and row["url"] == served[1] and row["converter"] == "test-orig"
    assert row["license"] == "mit" and row["local"] is None
    assert main(["download", "test-manual.m", "--dry-run"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["kind"] == "manual" and row["page"] == "https://example.org/weights"


# --- warm starts: the host's weights in the LS-DFN network compute the host's outputs ------------------------
WARM_HOSTS = {
    "deeplabv2": ({"backbone": "resnet50", "width": 0.125, "num_classes": 4, "scales": [1.0]},
                  {"lsdfn": {"out_channels": 6, "reduce_channels": 16, "kernel_size": 3, "samples_per_side": 3,
                             "sample_stride": 2}}, [3, 65, 65]),
    "flownets": ({"width": 0.125, "batch_norm": False},
                 {"lsdfn": {"out_channels": 6, "kernel_size": 3, "samples_per_side": 3, "sample_stride": 2}}, [6, 64, 128]),
    "flownetc": ({"width": 0.125, "batch_norm": False, "deconv_bias": True, "predict_bias": True, "upsample_bias": True,
                  "corr_normalize": False},
                 {"lsdfn": {"out_channels": 6, "kernel_size": 3, "samples_per_side": 3, "sample_stride": 2}}, [6, 64, 128]),
}


@pytest.mark.parametrize("arch", sorted(WARM_HOSTS))
def test_warm_start_computes_exactly_what_the_host_computes(arch, file_server, user_registry, tmp_path):  # noqa: F811
    from zoo.factory import build_model, example_inputs

    host_args, lsdfn_args, size = WARM_HOSTS[arch]
    task = "optical-flow" if arch.startswith("flownet") else "semantic-segmentation"
    base = {"task": task, "arch": arch, "paper": "lsdfn", "license": "apache-2.0", "input_size": size,
            "transforms": "flow-transforms" if task == "optical-flow" else {"preset": "segmentation", "args": {"mean": [0, 0, 0], "std": [1, 1, 1]}},
            "postprocess": "flow-post" if task == "optical-flow" else {"preset": "segmentation"}, "exportable": True,
            "card": "test-small-segnet.md"}
    torch.manual_seed(3)
    host = build_model(zoo.registry.parse_entry("test-x", {**base, "args": host_args, "weights": {}},
                                                tables=zoo.registry.default_registry().tables))
    for module in host.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    torch.save({"state_dict": {f"orig.{k}": v for k, v in host.state_dict().items()}}, buf)
    url = file_server.add("/host.pth", buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    models = {
        "test-host": {**base, "args": host_args, "weights": {"default": "h", "tags": {"h": {
            "source": "s", "license": "mit", "metrics": [],
            "upstream": {"url": url, "sha256": sha, "converter": "test-orig", "cited_from": "test"}}}}},
        "test-warm": {**base, "args": {**host_args, **lsdfn_args}, "weights": {"default": None, "tags": {"warm-h": {
            "source": "s", "license": "mit", "metrics": [], "warm_start": "test-host.h"}}}},
    }
    zoo.registry.load(write_registry(tmp_path / "warm.yaml", models))
    info = zoo.model_info("test-warm")
    assert info.pretrained and info.default_tag is None
    with pytest.raises(zoo.errors.UnknownModelError, match="pretrained='warm-h'"):
        zoo.create("test-warm", pretrained=True)
    warm = zoo.create("test-warm", pretrained="warm-h")
    plain = zoo.create("test-host", pretrained=True)
    torch.manual_seed(0)
    x = example_inputs(info, tuple(size[1:]), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(warm(*x), plain(*x), rtol=1e-5, atol=1e-5)
    lsdfn = [k for k in warm.state_dict() if "lsdfn" in k and k.endswith("weight")]
    assert lsdfn and any(warm.state_dict()[k].abs().sum() > 0 for k in lsdfn)  # the branch is initialised, not zero
    record = json.loads((Path(os.environ["ZOO_CACHE"]) / "converted" / "test-warm" / "warm-h" / "source.json").read_text())
    assert record["warm_start"] == "test-host.h" and record["expanded"]


def test_shipped_warm_start_tags_follow_their_hosts():
    """Every shipped warm start names an obtainable host tag and carries its args, transforms, categories."""
    from zoo.registry import default_registry

    found = 0
    for info in default_registry():
        for w in info.weights.values():
            if not w.warm_start:
                continue
            found += 1
            host_name, host_tag = w.warm_start.rsplit(".", 1)
            host = zoo.model_info(host_name).weights[host_tag]
            assert host.warm_start is None
            assert (w.args, w.transforms, w.categories, w.license) == (host.args, host.transforms, host.categories, host.license)
            assert w.tag != info.default_tag and w.source.startswith("no LS-DFN weights exist")
    assert found >= 4


# --- mirroring a conversion to a Hub org, and hf-hub: ids ----------------------------------------------------
def test_publish_a_converted_upstream_tag_then_the_hub_copy_comes_first(served, hub_server, hf_cache, tmp_path):
    from zoo.cards.publish import publish

    server, url, _, ours = served
    entry = publish("test-upstream.orig", None, "zoo-test/mirror", endpoint=hub_server.endpoint)
    assert entry["hub"]["repo"] == "zoo-test/mirror" and len(entry["hub"]["revision"]) == 40
    w = zoo.model_info("test-upstream").weights["orig"]
    both = {"source": w.source, "license": w.license, "hub": entry["hub"], "metrics": [],
            "upstream": {"url": url, "sha256": w.upstream.sha256, "converter": "test-orig", "cited_from": "test"}}
    zoo.registry.load(write_registry(tmp_path / "both.yaml", {"test-both": {**ENTRY, "weights": {"default": "orig", "tags": {"orig": both}}}}))
    server.close()  # the upstream host is gone: the Hub copy serves
    model = zoo.create("test-both", pretrained=True)
    torch.testing.assert_close(model.state_dict()["classifier.weight"], ours["classifier.weight"])
    assert not (Path(os.environ["ZOO_CACHE"]) / "converted" / "test-both").exists()


def test_hf_hub_ids_are_verified_and_pinned(served, hub_server, hf_cache):
    from huggingface_hub import CommitOperationAdd, HfApi

    from zoo.cards.publish import publish

    entry = publish("test-upstream.orig", None, "zoo-test/hfhub", endpoint=hub_server.endpoint)
    with pytest.warns(UserWarning, match=f"commit {entry['revision']}"):
        zoo.create("hf-hub:zoo-test/hfhub")
    zoo.create(f"hf-hub:zoo-test/hfhub@{entry['revision']}")  # pinned: no warning needed
    config = json.loads(Path(zoo.weights.hub_download("zoo-test/hfhub", "config.json", entry["revision"], what="t")).read_text())
    assert config["weights_sha256"] == entry["sha256"]
    config["weights_sha256"] = "0" * 64  # a config that no longer matches the weights it ships with
    api = HfApi(endpoint=hub_server.endpoint)
    bad = api.create_commit("zoo-test/hfhub", operations=[CommitOperationAdd("config.json", json.dumps(config).encode())],
                            commit_message="break")
    with pytest.raises(ChecksumError, match="0000000000"):
        zoo.create(f"hf-hub:zoo-test/hfhub@{bad.oid}")
    with pytest.raises(zoo.errors.UnknownModelError, match="not a commit sha, tag or branch"):
        zoo.create("hf-hub:zoo-test/hfhub@../../x")


@pytest.mark.parametrize("arch", ["rfcn", "couplenet"])
def test_rfcn_warm_start_scores_and_boxes_equal_the_hosts(arch):
    """R-FCN (CoupleNet) + LS-DFN filled with plain R-FCN (CoupleNet) weights (zoo.weights.expand_state_dict,
    what a warm-start tag does) gives the same class scores and box deltas for the same proposals."""
    from zoo.archs import get_arch
    from zoo.weights import expand_state_dict

    args = {"depth": 50, "num_classes": 5}
    lsdfn = {"out_channels": 6, "reduce_channels": 16, "kernel_size": 3, "samples_per_side": 3, "sample_stride": 2}
    torch.manual_seed(0)
    host, warm = get_arch(arch)(**args).eval(), get_arch(arch)(**args, lsdfn=lsdfn).eval()
    torch.nn.init.normal_(host.roi_heads.rfcn_cls.weight, std=0.5)
    report = expand_state_dict(warm, host.state_dict(), source=arch)
    assert list(report["expanded"]) == ["roi_heads.conv_new_1.weight"] and not report["kept_from_source"]
    assert all("lsdfn" in k for k in report["kept"])
    c5 = torch.randn(1, 2048, 9, 11)
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 80.0], [16.0, 8.0, 120.0, 140.0]])]
    with torch.no_grad():
        for a, b in zip(host.roi_heads.predict(c5, boxes), warm.roi_heads.predict(c5, boxes)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
