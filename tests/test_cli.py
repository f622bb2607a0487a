"""The `zoo` command, run in-process through zoo.cli.main (and once as an installed wheel)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_info_card(capsys):
    code, out, _ = run(capsys, "list", "deeplab*")
    assert code == 0 and "deeplabv3-r50" in out.splitlines()[2] or "deeplabv3-r50" in out
    assert any(line.split()[:2] == ["model", "task"] for line in out.splitlines()[:2])  # headers may wrap
    code, out, _ = run(capsys, "list", "--task", "semantic-segmentation", "--pretrained")
    assert code == 0
    code, out, _ = run(capsys, "info", "deeplabv2-r101", "--json")
    info = json.loads(out)
    assert info["arch"] == "deeplabv2" and info["transforms"]["args"]["channel_order"] == "bgr"


def test_info_is_a_readable_summary_and_json_on_request(capsys):
    code, out, _ = run(capsys, "info", "flownets")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "flownets  (optical-flow)"
    for label, value in (("paper", "FlowNet: Learning Optical Flow"), ("licence", "apache-2.0"),
                         ("input size", "6 x 384 x 512"), ("transforms", "optical-flow"),
                         ("weights", "pretrained=True loads mmflow-chairs")):
        assert any(line.startswith(label) and value in line for line in lines), (label, out)
    tags = [line for line in lines if line.startswith("  ")]
    assert [line.split()[0] for line in tags] == ["mmflow-chairs", "flownet2-s", "mmflow-sintel", "pinard-chairs",
                                                 "ptlflow-things"]
    assert "[upstream, default, licence apache-2.0]" in tags[0]
    assert "epe 2.03 (FlyingChairs validation; reported)" in tags[0]
    assert "[manual, licence other]" in tags[1] and "no metrics" in tags[1]

    code, out, _ = run(capsys, "info", "flownets-small.flyingshapes-28250")
    tags = [line for line in out.splitlines() if line.startswith("  ")]
    assert code == 0 and len(tags) == 1 and "bundled (no download), default" in tags[0]
    assert "epe 3.8786 (FlyingShapes (held out) seed 12345, 64 pairs, 192x256; measured)" in tags[0]

    code, out, _ = run(capsys, "info", "deeplabv2-lsdfn")
    assert code == 0 and "warm start from deeplabv2-r101.voc12" in out

    code, out, _ = run(capsys, "info", "flownets-small", "--json")
    assert code == 0 and json.loads(out) == zoo.model_info("flownets-small").to_dict()
    assert "Häusser" in out and "\\u" not in out


def test_unknown_model_is_a_clear_error_not_a_traceback(capsys):
    code, _, err = run(capsys, "info", "deeplabv3-r05")
    assert code == 2 and "unknown model 'deeplabv3-r05'" in err and "deeplabv3-r50" in err


def test_download_and_verify_against_the_hub(capsys, hub_server, hf_cache, user_registry, tmp_path):
    from zoo.cards.publish import publish

    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.create("test-small-segnet").state_dict().items()}, str(path))
    entry = publish("test-small-segnet", path, "zoo-test/cli", tag="v1", endpoint=hub_server.endpoint)
    user_registry("test-small-segnet", {"default": "v1", "tags": {"v1": {
        "hub": {k: entry[k] for k in ("repo", "revision", "file", "sha256", "size")},
        "source": "test", "license": "apache-2.0",
        "metrics": [{"dataset": "d", "split": "s", "metric": "m", "value": 1, "measured": "test"}]}}})
    code, out, _ = run(capsys, "verify", "test-small-segnet")
    assert code == 0 and "not downloaded" in out
    code, out, _ = run(capsys, "download", "test-small-segnet")
    assert code == 0 and "test-small-segnet.v1:" in out
    code, out, _ = run(capsys, "verify", "test-small-segnet.v1")
    assert code == 0 and ": ok" in out
    cached = Path(out.split()[-1]).resolve()
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x00")
    code, out, _ = run(capsys, "verify", "test-small-segnet")
    assert code == 1 and "FAILED" in out


def test_publish_dry_run_prints_the_registry_entry(capsys, user_registry, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.create("test-small-segnet").state_dict().items()}, str(path))
    code, out, _ = run(capsys, "publish", "test-small-segnet", "--weights", str(path), "--repo-id", "org/x",
                       "--dry-run", "--out-dir", str(tmp_path / "out"))
    entry = json.loads(out)
    assert code == 0 and entry["repo"] == "org/x" and len(entry["sha256"]) == 64 and entry["size"] > 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["arch"] == "test_small_segnet"


def test_predict_writes_a_blended_mask(capsys, user_registry, realdata, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.create("test-small-segnet").state_dict().items()}, str(path))
    image = realdata / "voc2012_val_samples_vainf" / "1_image.png"
    out = tmp_path / "mask.png"
    code, printed, _ = run(capsys, "predict", "test-small-segnet", str(image), "--checkpoint", str(path), "--out", str(out))
    from zoo.io import read_image

    assert code == 0 and out.is_file()
    picture, original = read_image(out), read_image(image)
    assert picture.shape == original.shape
    assert not torch.equal(picture, original)
    assert json.loads(printed)["classes"]


def test_predict_reads_a_pickle_checkpoint_with_allow_pickle(capsys, tmp_path):
    """`--allow-pickle` is what the error of a .pth checkpoint asks for: with it the file is read
    (torch.load(weights_only=True)) and the prediction is the bundled weights' own."""
    from zoo.io import read_image

    image = ROOT / "zoo" / "samples" / "shapes_flat.png"
    torch.save(zoo.create("deeplabv2-lsdfn-small", pretrained=True).state_dict(), tmp_path / "w.pth")
    argv = ["predict", "deeplabv2-lsdfn-small", str(image), "--checkpoint", str(tmp_path / "w.pth")]
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "a.png"))
    assert code == 2 and "--allow-pickle" in err and not (tmp_path / "a.png").exists()
    code, printed, err = run(capsys, *argv, "--allow-pickle", "--out", str(tmp_path / "a.png"))
    assert code == 0, err
    code, bundled, _ = run(capsys, "predict", "deeplabv2-lsdfn-small", str(image), "--out", str(tmp_path / "b.png"))
    assert code == 0 and json.loads(printed)["classes"] == json.loads(bundled)["classes"]
    assert torch.equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png"))


def test_predict_video_draws_frames_predictions_and_filters_with_the_bundled_weights(capsys, tmp_path):
    from zoo.io import read_image

    frames = sorted((ROOT / "zoo" / "samples").glob("moving_digits_*.png"))
    out = tmp_path / "video.png"
    code, printed, err = run(capsys, "predict", "dfn-moving-mnist", *map(str, frames), "--out", str(out))
    assert code == 0, err
    summary = json.loads(printed)
    assert summary["input_frames"] == summary["predicted_frames"] == 10 and summary["filter_positions"]
    picture = read_image(out)
    assert picture.shape == (3, 4 * 66 - 2, 10 * 66 - 2)         # inputs, predictions, displacements, filters
    torch.testing.assert_close(picture[:, :64, :64], read_image(frames[0]))
    code, printed, _ = run(capsys, "predict", "convnet-moving-mnist", *map(str, frames), "--out", str(out))
    assert code == 0 and read_image(out).shape == (3, 2 * 66 - 2, 10 * 66 - 2) and "filter_positions" not in printed


def test_predict_without_weights_says_how_to_proceed(capsys):
    code, _, err = run(capsys, "predict", "cacnet-r101", "x.png", "--out", "y.png")
    assert code == 2 and "--checkpoint" in err


def test_wheel_ships_registry_and_cards_and_runs_zoo_list(tmp_path):
    """Build the wheel, install it in a fresh venv (dependencies visible through a .pth), run `zoo list`."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("dynzoo-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import zoo.cli, sys; sys.exit(zoo.cli.main(['list']))"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "deeplabv3-r50" in done.stdout
    script = ("import zoo, zoo.cards as c; print(zoo.__file__); "
              "print(all(c.card_path(zoo.model_info(n)).is_file() for n in zoo.list_models()))")
    where = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env).stdout.split()
    assert str(site) in where[0] and where[1] == "True"


def test_predict_flow_writes_colour_png_and_flo(capsys, realdata, tmp_path):
    from zoo.flow import read_flo
    from zoo.io import read_image

    torch.manual_seed(0)
    model = zoo.create("flownets", width=0.125)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    frames = sorted((realdata / "flyingchairs" / "data").glob("*-img*.ppm"))[:2]
    out, flo = tmp_path / "flow.png", tmp_path / "flow.flo"
    code, printed, _ = run(capsys, "predict", "flownets", *map(str, frames), "--checkpoint", str(path),
                           "--arch-override", "width=0.125", "--out", str(out), "--flo", str(flo))
    assert code == 0
    assert read_image(out).shape == read_image(frames[0]).shape
    assert read_flo(flo).shape == (2, *read_image(frames[0]).shape[-2:])
    assert json.loads(printed)["max_flow_px"] >= 0
    code, _, err = run(capsys, "predict", "flownets", str(frames[0]), "--out", str(out), "--random-weights")
    assert code == 2 and "two frames" in err


@pytest.mark.parametrize("name,files,key", [
    ("faster-rcnn-r50-dcn", 1, "detections"),
    ("drn-c-26", 1, "labels"),
    ("hdfnet-vgg16", 2, "mean_saliency"),
])
def test_predict_other_tasks_write_a_picture(capsys, realdata, tmp_path, name, files, key):
    from zoo.io import read_image

    sod = realdata / "rgbd_sod_SSD"
    rgb = sorted((sod / "RGB").iterdir())[0]
    depth = sorted((sod / "depth").iterdir())[0]
    inputs = [str(rgb), str(depth)][:files]
    out = tmp_path / "pred.png"
    extra = ["--arch-override", "min_size=96", "--arch-override", "max_size=128", "--score-threshold", "0"] if "rcnn" in name else []
    code, printed, err = run(capsys, "predict", name, *inputs, "--random-weights", "--out", str(out), *extra)
    assert code == 0, err
    assert key in json.loads(printed) and out.is_file()
    assert read_image(out).shape[-2:] == read_image(rgb).shape[-2:]
