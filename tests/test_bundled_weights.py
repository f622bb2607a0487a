"""Weights in the package's bundled store: every one re-checked against its reference tensors, so that
silent drift in an operator is caught; every registered metric of a bundled weight re-measured with the
command recorded in its ``measured`` field; and the store round trip (publish --store -> create) itself."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo import weights as W
from zoo.cards.publish import REFERENCE_FILE, publish, reference_output
from zoo.factory import example_inputs
from zoo.registry import default_registry

BUNDLED = [(info.name, w.tag) for info in default_registry() for w in info.weights.values()
           if w.hub is not None and (W.BUNDLED_STORE / w.hub.repo / w.hub.revision / w.hub.file).is_file()]


def check_against_reference(name: str, tag: str, weights_dir: Path) -> None:
    ref = load_file(str(weights_dir / REFERENCE_FILE))
    model = zoo.create(f"{name}.{tag}")
    torch.testing.assert_close(reference_output(model, (ref["input"],)), ref["output"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,tag", BUNDLED)
def test_bundled_weights_reproduce_their_reference_outputs(name, tag):
    w = zoo.model_info(name).weights[tag]
    check_against_reference(name, tag, W.BUNDLED_STORE / w.hub.repo / w.hub.revision)


REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
BUNDLED_COMMANDS = sorted({(name, tag, m.measured) for name, tag in BUNDLED
                           for m in zoo.model_info(name).weights[tag].metrics})


def evaluate_command(measured: str) -> list[str]:
    """The argv of ``scripts/evaluate.py`` from a metric's ``measured`` field."""
    argv = shlex.split(measured)
    if len(argv) < 2 or not argv[1].endswith("scripts/evaluate.py"):
        raise ValueError(f"metric 'measured' must be the scripts/evaluate.py command that produced it, got {measured!r}")
    return argv[2:]


@pytest.mark.parametrize("name,tag,measured", [pytest.param(*c, id=f"{c[0]}.{c[1]}-{i}") for i, c in enumerate(BUNDLED_COMMANDS)])
def test_bundled_metrics_are_reproduced_by_their_recorded_command(name, tag, measured):
    from zoo.evaluation import main as evaluate_main

    argv = evaluate_command(measured)
    data = argv[argv.index("--data") + 1]
    if "realdata" in data:
        if not REALDATA.is_dir():
            pytest.skip(f"{REALDATA} is absent")
        argv[argv.index("--data") + 1] = data.replace("../shared/realdata", str(REALDATA))
    assert argv[argv.index("--model") + 1] == name and argv[argv.index("--pretrained") + 1] in (tag, "default")
    result = evaluate_main(argv + ["--threads", "2"])
    for metric in zoo.model_info(name).weights[tag].metrics:
        if metric.measured == measured:
            assert result[metric.metric] == pytest.approx(metric.value, rel=2e-3, abs=1e-4), (metric.metric, measured)


def test_every_file_in_the_store_is_registered():
    registered = {W.BUNDLED_STORE / w.hub.repo / w.hub.revision for i in default_registry() for w in i.weights.values()
                  if w.hub is not None}
    on_disk = {p.parent for p in W.BUNDLED_STORE.rglob("model.safetensors")} if W.BUNDLED_STORE.is_dir() else set()
    assert on_disk <= registered, f"unregistered releases in the bundled store: {sorted(on_disk - registered)}"


def test_store_round_trip_and_drift_detection(user_registry, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = zoo.create("test-small-segnet")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    store = tmp_path / "store"
    entry = publish("test-small-segnet", path, "zoo-test/store", store=store)
    assert len(entry["revision"]) == 40 and (store / "zoo-test/store" / entry["revision"] / REFERENCE_FILE).is_file()
    user_registry("test-small-segnet", {"default": "s", "tags": {"s": {
        "hub": {k: entry[k] for k in ("repo", "revision", "file", "sha256", "size")},
        "source": "test", "license": "apache-2.0",
        "metrics": [{"dataset": "d", "split": "s", "metric": "m", "value": 1, "measured": "test"}]}}})
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", str(store))
    release = store / "zoo-test/store" / entry["revision"]
    check_against_reference("test-small-segnet", "s", release)
    assert load_file(str(release / REFERENCE_FILE))["input"].shape == example_inputs(zoo.model_info("test-small-segnet"), (64, 64))[0].shape
    # an operator change that alters outputs is caught: simulate one by perturbing the ASPP projection
    from zoo.ops.aspp import ASPP

    original = ASPP.forward
    monkeypatch.setattr(ASPP, "forward", lambda self, x: original(self, x) * 1.01)
    with pytest.raises(AssertionError):
        check_against_reference("test-small-segnet", "s", release)
