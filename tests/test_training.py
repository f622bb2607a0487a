"""zoo.training: losses, exact resume, DDP (2 gloo processes) == single process, segmentation,
classification (real digits, shift augmentation, DyConv2d temperature annealing), instance segmentation.
Warm start, weight averaging and BatchNorm recomputation: tests/test_training_checkpoints.py."""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from zoo.errors import InputError
from zoo.training import (ClassificationStream, FlowStream, TrainConfig, multiscale_epe_loss, segmentation_loss, train,
                          training_transforms)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "flownets", "--arch-override", "width=0.0625", "--data", "flying-shapes", "--size", "64", "64",
        "--textures", "procedural", "--threads", "1", "--no-progress", "--log-every", "1"]


def _cfg(out, steps, **kw) -> TrainConfig:
    base = dict(model="flownets", out=str(out), arch_overrides={"width": 0.0625}, size=(64, 64), batch_size=2,
                steps=steps, textures="procedural", lr=1e-3, log_every=1, checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


def test_multiscale_loss_hand_worked():
    target = torch.zeros(1, 2, 8, 8)
    target[:, 0] = 20.0                                     # 1 in network units everywhere
    outs = [torch.zeros(1, 2, s, s) for s in (4, 2, 1, 1, 1)]           # flow2 .. flow6
    loss = multiscale_epe_loss(outs, target)
    # per scale: EPE 1 at every cell, summed: 16, 4, 1, 1, 1
    assert float(loss) == pytest.approx(0.005 * 16 + 0.01 * 4 + 0.02 + 0.08 + 0.32)
    mean = multiscale_epe_loss(outs, target, reduction="mean")
    assert float(mean) == pytest.approx(0.005 + 0.01 + 0.02 + 0.08 + 0.32)
    exact = [F.interpolate(target / 20, o.shape[-2:], mode="area") for o in outs]
    assert float(multiscale_epe_loss(exact, target)) == 0
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[:, :2, :2] = False                                # one 4x4 cell of the first scale unknown
    assert float(multiscale_epe_loss(outs, target, valid)) < float(loss)


def test_segmentation_loss_forms():
    label = torch.randint(0, 3, (2, 8, 8))
    label[:, 0] = 255
    logits = torch.randn(2, 3, 4, 4)
    plain = segmentation_loss(logits, label)
    up = F.interpolate(logits, (8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(plain, F.cross_entropy(up, label, ignore_index=255))
    both = segmentation_loss({"out": logits, "aux": logits}, label, aux_weight=0.5)
    assert torch.allclose(both, 1.5 * plain)
    multi = segmentation_loss([logits, torch.randn(2, 3, 8, 8)], label)
    assert multi.shape == () and float(multi) > 0


def test_exact_resume_is_bit_identical(tmp_path):
    torch.set_num_threads(1)
    train(_cfg(tmp_path / "straight", 4), progress=False)
    train(_cfg(tmp_path / "resumed", 2), progress=False)
    assert (tmp_path / "resumed" / "checkpoint-0000002.pt").is_file()
    train(_cfg(tmp_path / "resumed", 4), progress=False)          # picks up checkpoint-0000002.pt
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(l) for l in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    straight = [json.loads(l) for l in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in straight] == [r["loss"] for r in log]
    with pytest.raises(ValueError, match="different batch_size"):
        train(_cfg(tmp_path / "resumed", 6, batch_size=4), progress=False)


def test_flow_stream_photometric_jitter_is_seeded_and_leaves_flow_alone():
    from zoo.data import FlyingShapes

    base = FlyingShapes(size=(64, 96), seed=0, textures="procedural")
    plain, jittered = FlowStream(base, 0, (64, 96)), FlowStream(base, 0, (64, 96), photometric=1.0)
    a, b = plain.__getitems__([3, 4]), jittered.__getitems__([3, 4])
    again = FlowStream(base, 0, (64, 96), photometric=1.0)[4]
    assert torch.equal(b[1]["image1"], again["image1"]) and torch.equal(b[1]["image2"], again["image2"])
    for x, y in zip(a, b):
        assert torch.equal(x["flow"], y["flow"])
        assert float((x["image1"] - y["image1"]).abs().mean()) > 0.01
    with pytest.raises(ValueError, match=r"--photometric\) must be a strength in \[0, 1\]"):
        FlowStream(base, 0, (64, 96), photometric=2.0)


def test_resume_accepts_checkpoints_from_before_a_config_key_existed(tmp_path):
    torch.set_num_threads(1)
    train(_cfg(tmp_path / "run", 2), progress=False)
    path = tmp_path / "run" / "checkpoint-0000002.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["photometric"]
    torch.save(ckpt, path)
    train(_cfg(tmp_path / "run", 3), progress=False)
    with pytest.raises(ValueError, match="different photometric"):
        train(_cfg(tmp_path / "run", 4, photometric=0.5), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process(tmp_path):
    common = TINY + ["--steps", "3", "--batch-size", "4", "--optimizer", "sgd", "--lr", "0.01",
                     "--checkpoint-every", "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "scripts" / "train.py")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), script, *common,
         "--out", str(tmp_path / "ddp"), "--dump-replicas"],
        env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, script, *common, "--out", str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    r0 = load_file(tmp_path / "ddp" / "replica-0.safetensors")
    r1 = load_file(tmp_path / "ddp" / "replica-1.safetensors")
    one = load_file(tmp_path / "single" / "model.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"replicas differ at {k}"
        assert torch.allclose(r0[k], one[k], rtol=1e-4, atol=1e-6), k
    log_ddp = [json.loads(l) for l in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    log_one = [json.loads(l) for l in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log_ddp] == pytest.approx([r["loss"] for r in log_one], rel=1e-5)


def test_segmentation_training_on_shapes(tmp_path, user_registry):
    cfg = TrainConfig(model="test-small-segnet", out=str(tmp_path / "seg"), data="shapes", num_classes=7,
                      size=(32, 32), batch_size=2, steps=2, textures="procedural", optimizer="sgd", lr=0.01,
                      schedule="poly", log_every=1, checkpoint_every=2)
    record = train(cfg, progress=False)
    assert record["step"] == 2 and 0 <= record["pixel_accuracy"] <= 1 and record["loss"] > 0
    state = load_file(tmp_path / "seg" / "model.safetensors")
    assert state["classifier.weight"].shape[0] == 7


def test_warm_started_run_writes_its_report(tmp_path):
    from safetensors.torch import save_file

    import zoo

    torch.manual_seed(0)
    source = zoo.create("flownets", width=0.0625).state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, tmp_path / "source.safetensors")
    cfg = _cfg(tmp_path / "run", 1, model="flownetc", warm_start=str(tmp_path / "source.safetensors"))
    train(cfg, progress=False)
    report = json.loads((tmp_path / "run" / "warm_start.json").read_text())
    assert report["source"].endswith("source.safetensors") and "conv1.0.weight" in report["kept"]


def test_flow_size_must_be_multiple_of_64(tmp_path):
    with pytest.raises(ValueError, match="multiples of 64"):
        train(_cfg(tmp_path / "bad", 1, size=(60, 64)), progress=False)


# ------------------------------------------------------------------------------------------- classification
DIGITS_ENTRY = {
    "task": "image-classification",
    "arch": "dy_resnet",
    "args": {"depth": 18, "num_kernels": 4, "num_classes": 10, "width": 0.0625, "stem": "cifar"},
    "classifier": ["fc"],
    "paper": {"title": "Dynamic Convolution: Attention over Convolution Kernels",
              "authors": "Yinpeng Chen, Xiyang Dai, Mengchen Liu, Dongdong Chen, Lu Yuan, Zicheng Liu",
              "venue": "CVPR", "year": 2020, "arxiv": "1912.03458"},
    "license": "apache-2.0",
    "card": "test-dy-digits.md",
    "input_size": [3, 32, 32],
    "transforms": {"preset": "classification",
                   "args": {"mean": [0.3, 0.3, 0.3], "std": [0.3, 0.3, 0.3], "resize": 32, "crop": 32}},
    "postprocess": {"preset": "classification"},
    "exportable": True,
    "weights": {"default": None, "tags": {}},
}


@pytest.fixture
def digits_model(user_registry) -> str:
    """``test-dy-digits``: a width-1/16 DY-ResNet-18 with the 32x32 stem, registered for the test only."""
    pytest.importorskip("sklearn")
    import zoo.registry as R

    R.default_registry().add(R.parse_entry("test-dy-digits", copy.deepcopy(DIGITS_ENTRY), __file__), replace=True)
    return "test-dy-digits"


def _digits_cfg(out, steps, model, **kw) -> TrainConfig:
    base = dict(model=model, out=str(out), data="digits@train", size=(32, 32), batch_size=4, steps=steps,
                optimizer="sgd", lr=0.05, log_every=1, checkpoint_every=2, augment_shift=4, temperature_anneal=3)
    base.update(kw)
    return TrainConfig(**base)


def test_classification_exact_resume_annealing_and_eval(tmp_path, digits_model):
    torch.set_num_threads(1)
    record = train(_digits_cfg(tmp_path / "straight", 4, digits_model, eval_data="digits@test", eval_every=4),
                   progress=False)
    train(_digits_cfg(tmp_path / "resumed", 2, digits_model), progress=False)
    train(_digits_cfg(tmp_path / "resumed", 4, digits_model), progress=False)   # resumes at step 2
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a["fc.weight"].shape == (10, 32) and a["layer1.0.conv1.weight"].shape == (4, 4, 4, 3, 3)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight = [json.loads(l) for l in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    resumed = [json.loads(l) for l in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in straight] == [r["loss"] for r in resumed]
    # tau falls linearly 30 -> 1 over 3 steps, then stays at 1 (the inference value)
    assert [r["temperature"] for r in resumed] == pytest.approx([30.0, 30 - 29 / 3, 30 - 58 / 3, 1.0])
    assert all(0 <= r["top1"] <= 1 and r["top1"] * 4 == round(r["top1"] * 4) for r in straight)
    ev = record["eval"]
    assert ev["task"] == "image-classification" and ev["images"] == 359 and 0 <= ev["top1"] <= ev["top5"] <= 1
    assert "per_image" not in ev and set(ev["per_class"]) == {str(i) for i in range(10)}
    assert "eval" in straight[-1] and "eval" not in straight[0]


def test_classification_trains_on_what_evaluation_sees(digits_model):
    """The whole classification preset (resize 32, crop 32): dropping ``resize`` as for segmentation would
    fall back to the preset's default 256 and train on an 8x zoomed centre."""
    import zoo

    model = zoo.create(digits_model)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(training_transforms(model)(images), model.transforms(images), rtol=0, atol=0)
    torch.testing.assert_close(model.transforms(images), (images - 0.3) / 0.3)


def test_classification_static_variant_without_annealing(tmp_path, digits_model):
    torch.set_num_threads(1)
    cfg = _digits_cfg(tmp_path / "static", 2, digits_model, arch_overrides={"dynamic": False}, temperature_anneal=0,
                      augment_shift=0)
    record = train(cfg, progress=False)
    assert record["step"] == 2 and record["loss"] > 0 and "temperature" not in record
    assert load_file(tmp_path / "static" / "model.safetensors")["layer1.0.conv1.weight"].shape == (4, 4, 3, 3)
    with pytest.raises(ValueError, match="no DyConv2d"):
        train(_digits_cfg(tmp_path / "bad", 2, digits_model, arch_overrides={"dynamic": False}), progress=False)


def test_classification_stream_shift_is_a_seeded_translation():
    image = torch.arange(3 * 6 * 6, dtype=torch.float32).view(3, 6, 6) + 1
    base = [{"image": image, "label": 7}] * 5
    stream = ClassificationStream(base, seed=3, size=(6, 6), shift=2)
    padded = F.pad(image, (2, 2, 2, 2))
    offsets = set()
    for p in range(20):
        s = stream[p]
        assert s["label"].dtype == torch.int64 and s["label"].shape == () and int(s["label"]) == 7
        hits = [(t, l) for t in range(5) for l in range(5) if torch.equal(padded[:, t:t + 6, l:l + 6], s["image"])]
        assert len(hits) == 1
        offsets.add(hits[0])
        assert torch.equal(stream.__getitems__([p])[0]["image"], s["image"])     # deterministic per position
    assert len(offsets) > 3
    plain = ClassificationStream(base, seed=3, size=(6, 6))
    assert all(torch.equal(plain[p]["image"], image) for p in range(5))
    with pytest.raises(ValueError, match="augment_shift"):
        ClassificationStream(base, seed=0, size=(6, 6), shift=-1)


def test_median_frequency_weights_by_hand_and_in_the_loss():
    import torch.nn.functional as F

    from zoo.training import median_frequency_weights, segmentation_loss

    labels = [torch.tensor([[0, 0], [0, 1]]), torch.tensor([[0, 2], [2, 255]])]
    # class pixels / pixels of the images holding the class: c0 4/7, c1 1/4, c2 2/3 (255 ignored); median 4/7
    w = median_frequency_weights(labels, num_classes=4)
    torch.testing.assert_close(w, torch.tensor([1.0, (4 / 7) / (1 / 4), (4 / 7) / (2 / 3), 0.0]))
    logits, label = torch.randn(2, 4, 2, 2), torch.stack(labels)
    torch.testing.assert_close(segmentation_loss(logits, label, weight=w),
                               F.cross_entropy(logits, label, weight=w, ignore_index=255))


# ------------------------------------------------------------------------------------------- instance segmentation
CONDINST_TINY = {"depth": 18, "width": 0.25, "norm": "bn", "trainable_layers": 5, "fpn_channels": 32,
                 "head_convs": 1, "mask_branch_channels": 16, "mask_branch_convs": 1, "min_size": 64,
                 "max_size": 96}


def test_instance_stream_drops_crowds_and_flips_consistently(tmp_path):
    """The crowd region is dropped; a flipped sample's boxes are the boxes of its flipped masks; the flip
    draw is a function of (seed, p); collate pads and batch_targets gives each image and target back."""
    pytest.importorskip("pycocotools")
    from support.coco_folder import write_coco
    from zoo.data import CocoDetection
    from zoo.tasks.instance_segmentation import InstanceStream, batch_targets, collate_instances

    base = CocoDetection(write_coco(tmp_path / "coco"))
    plain, flipping = InstanceStream(base, seed=3), InstanceStream(base, seed=3, hflip=1.0)
    p = next(p for p in range(4) if plain.index(p) == 0)                  # the 60 x 80 image with a crowd
    s, f = plain[p], flipping[p]
    assert s["labels"].tolist() == [1, 18] and s["masks"].shape == (2, 60, 80)
    assert torch.equal(f["image"], s["image"].flip(-1)) and torch.equal(f["masks"], s["masks"].flip(-1))
    ys, xs = f["masks"][0].nonzero().unbind(1)
    torch.testing.assert_close(f["boxes"][0], torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
    half = InstanceStream(base, seed=3, hflip=0.5)
    draws = [bool(torch.equal(half[q]["image"], plain[q]["image"])) for q in range(16)]
    assert draws == [bool(torch.equal(half[q]["image"], plain[q]["image"])) for q in range(16)] and 0 < sum(draws) < 16
    batch = collate_instances([plain[q] for q in range(2)])
    assert batch["image"].shape == (2, 3, 72, 80) and batch["masks"].shape == (2, 2, 72, 80)
    images, targets = batch_targets(batch)
    for q, (image, target) in enumerate(zip(images, targets)):
        assert torch.equal(image, plain[q]["image"])
        assert all(torch.equal(target[k], plain[q][k]) for k in ("boxes", "labels", "masks"))
    with pytest.raises(InputError, match="COCO instances"):
        InstanceStream([{"image": torch.zeros(3, 4, 4)}], seed=0)


def test_condinst_trains_on_coco_and_resumes_exactly(tmp_path):
    """scripts/train.py's loop on a COCO folder: the losses of the tiny CondInst, loss_mask logged, and N
    straight steps == N/2 + resume + N/2 (the random min-size choice and instance sampling draw from the
    checkpointed RNG)."""
    pytest.importorskip("pycocotools")
    from support.coco_folder import write_coco

    torch.set_num_threads(1)
    data = f"coco:{write_coco(tmp_path / 'coco')}"
    cfg = lambda out, steps: TrainConfig(model="condinst-r50", out=str(tmp_path / out), data=data,  # noqa: E731
                                         arch_overrides={**CONDINST_TINY, "max_proposals": 6}, batch_size=2,
                                         steps=steps, lr=1e-3, hflip=0.5, log_every=1, checkpoint_every=2)
    record = train(cfg("straight", 4), progress=False)
    assert record["step"] == 4 and 0 <= record["loss_mask"] <= 1 and record["loss"] > record["loss_mask"]
    train(cfg("resumed", 2), progress=False)
    train(cfg("resumed", 4), progress=False)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
