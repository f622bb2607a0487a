"""Every user error of the `zoo` command, from a table of bad inputs: one line on stderr naming the thing at
fault (and how to fix it), exit code 2 (130 when interrupted), nothing on stdout, no traceback; the
traceback only with ZOO_DEBUG=1. The models that need weights are the bundled ones (no download)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "zoo" / "samples"
SEG, FLOW = "deeplabv2-lsdfn-small", "flownets-small"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _dead_endpoint() -> str:
    """A local URL nothing listens on (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    """Bad files in tmp_path, and the good samples, for the {placeholders} of the table."""
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    sample = (SAMPLES / "shapes_flat.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(sample[: len(sample) // 2])
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "a-file").write_text("")
    (tmp_path / "read-only").mkdir(mode=0o500)
    (tmp_path / "w.pth").write_bytes(b"not a pickle")
    (tmp_path / "w.safetensors").write_text("not safetensors")
    return {"tmp": str(tmp_path), "flat": str(SAMPLES / "shapes_flat.png"),
            "frame1": str(SAMPLES / "flying_shapes_1.png"), "frame2": str(SAMPLES / "flying_shapes_2.png"),
            "dead": _dead_endpoint()}


def predict(*argv: str, model: str = SEG, image: str = "{flat}", out: str = "{tmp}/out.png") -> list[str]:
    return ["predict", model, image, "--out", out, *argv]


# argv ({placeholders} of the `places` fixture), what the one line must name
BAD_INPUTS = [
    # input images
    pytest.param(predict(image="{tmp}/missing.png"), ["missing.png", "does not exist"], id="image-missing"),
    pytest.param(predict(image="{tmp}/empty.png"), ["empty.png"], id="image-empty"),
    pytest.param(predict(image="{tmp}/text.png"), ["text.png"], id="image-not-an-image"),
    pytest.param(predict(image="{tmp}/truncated.png"), ["truncated.png"], id="image-truncated"),
    pytest.param(predict(image="{tmp}/a-dir"), ["a-dir"], id="image-is-a-directory"),
    pytest.param(["predict", FLOW, "{flat}", "{frame1}", "--out", "{tmp}/o.png"], ["same size", "shapes_flat.png"],
                 id="flow-frames-of-different-sizes"),
    pytest.param(["predict", FLOW, "{frame1}", "--out", "{tmp}/o.png"], ["two frames"], id="flow-one-frame"),
    pytest.param(["predict", FLOW, "{frame1}", "{tmp}/missing.png", "--out", "{tmp}/o.png"], ["missing.png"],
                 id="flow-second-frame-missing"),
    # output paths, checked before the model is built
    pytest.param(predict(out="{tmp}/no-such-dir/out.png"), ["no-such-dir", "does not exist"], id="out-dir-missing"),
    pytest.param(predict(out="{tmp}/a-file/out.png"), ["a-file", "not a directory"], id="out-dir-is-a-file"),
    pytest.param(predict(out="{tmp}/dir.png"), ["dir.png", "directory"], id="out-is-a-directory"),
    pytest.param(predict(out="{tmp}/out.jpg"), ["out.jpg", ".png"], id="out-not-png"),
    pytest.param(predict(out="{tmp}/read-only/out.png"), ["read-only", "not writable"], id="out-dir-not-writable",
                 marks=pytest.mark.skipif(AS_ROOT, reason="running as root: every directory is writable")),
    pytest.param(["predict", FLOW, "{frame1}", "{frame2}", "--out", "{tmp}/o.png", "--flo", "{tmp}/no-such-dir/f.flo"],
                 ["--flo", "no-such-dir"], id="flo-dir-missing"),
    # devices, checked before the model is built
    pytest.param(predict("--device", "cuda"), ["cuda", "--device cpu"], id="device-cuda-without-cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    pytest.param(predict("--device", "bogus"), ["bogus"], id="device-bogus"),
    pytest.param(predict("--device", "meta"), ["meta"], id="device-meta"),
    # weights
    pytest.param(predict("--checkpoint", "{tmp}/w.pth"), ["w.pth", "--allow-pickle"], id="pickle-without-allow-pickle"),
    pytest.param(predict("--checkpoint", "{tmp}/w.pth", "--allow-pickle"), ["w.pth"], id="pickle-unreadable"),
    pytest.param(predict("--checkpoint", "{tmp}/w.safetensors"), ["w.safetensors"], id="checkpoint-corrupt"),
    pytest.param(predict("--checkpoint", "{tmp}/missing.safetensors"), ["missing.safetensors"],
                 id="checkpoint-missing"),
    pytest.param(predict("--checkpoint", "{tmp}/w.safetensors", model=f"{SEG}.shapes-flat-16k"), ["--checkpoint"],
                 id="tag-and-checkpoint"),
    pytest.param(predict("--checkpoint", "{tmp}/w.safetensors", "--random-weights"), ["--random-weights"],
                 id="checkpoint-and-random-weights"),
    pytest.param(predict(model="cacnet-r101"), ["cacnet-r101", "--checkpoint"], id="model-without-weights"),
    pytest.param(predict("--arch-override", "width"), ["width", "KEY=VALUE"], id="arch-override-without-value"),
    pytest.param(predict("--random-weights", "--arch-override", "bogus=1"), ["bogus"], id="arch-override-unknown"),
    pytest.param(predict("--random-weights", model="dfn-moving-mnist"), ["dfn-moving-mnist", "10 frames", "1 file"],
                 id="video-prediction-one-frame"),
    # unknown models and tags, everywhere
    pytest.param(["info", "deeplabv3-r05"], ["deeplabv3-r05", "deeplabv3-r50"], id="info-unknown-model"),
    *[pytest.param([command, f"{SEG}.nosuch", *extra], ["nosuch", "shapes-flat-16k"],
                   id="-".join([command, *(e.strip("-") for e in extra), "unknown-tag"]))
      for command, extra in (("info", []), ("info", ["--json"]), ("card", []), ("download", []),
                             ("download", ["--dry-run"]), ("verify", []))],
    pytest.param(predict(model=f"{SEG}.nosuch"), ["nosuch", "shapes-flat-16k"], id="predict-unknown-tag"),
    pytest.param(["list", "--task", "bogus"], ["bogus", "semantic-segmentation"], id="list-unknown-task"),
    pytest.param(["download"], ["--all"], id="download-without-name"),
    pytest.param(["import", "deeplabv3-r50.coco-voc", "{tmp}/missing.pth"], ["missing.pth"], id="import-missing-file"),
    pytest.param(["convert", "nosuch", "{tmp}/a.pth", "{tmp}/b.safetensors"], ["nosuch"],
                 id="convert-unknown-converter"),
    # publishing
    pytest.param(["publish", f"{SEG}.shapes-flat-16k", "--repo-id", "org/x", "--endpoint", "{dead}"],
                 ["{dead}", "could not be reached"], id="publish-endpoint-unreachable"),
    pytest.param(["publish", SEG, "--repo-id", "org/x", "--dry-run"], ["--weights"], id="publish-without-weights"),
    # usage errors (argparse), one line too
    pytest.param(["predict", SEG, "{flat}"], ["--out"], id="usage-missing-option"),
    pytest.param(["list", "--sort", "bogus"], ["--sort", "bogus"], id="usage-bad-choice"),
    pytest.param(["nosuch"], ["nosuch"], id="usage-unknown-command"),
]


@pytest.mark.parametrize("argv,named", BAD_INPUTS)
def test_a_bad_input_is_one_line_and_exit_code_2(capsys, monkeypatch, places, argv, named):
    from huggingface_hub import constants

    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the unreachable endpoint is tried, not refused
    argv = [a.format(**places) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"{argv}: stderr is not one line:\n{err}"
    for thing in named:
        assert thing.format(**places) in lines[0], (thing, lines[0])
    assert lines[0].startswith("zoo")
    assert out == ""


def test_interrupt_is_one_line_and_exit_code_130(capsys, monkeypatch):
    import zoo.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    monkeypatch.setattr(zoo.cli, "cmd_list", interrupted)
    assert main(["list"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == ["zoo list: interrupted"]


def test_zoo_debug_shows_the_traceback(capsys, monkeypatch, places):
    monkeypatch.setenv("ZOO_DEBUG", "1")
    with pytest.raises(ZooError, match="nosuch"):
        main(["info", f"{SEG}.nosuch"])
    with pytest.raises(ZooError, match="empty.png"):
        main(predict(image=f"{places['tmp']}/empty.png", out=f"{places['tmp']}/out.png"))


def test_no_traceback_reaches_stderr_of_the_real_command(tmp_path):
    """`python -m zoo.cli` in a subprocess: the error is one line and the exit code 2; ZOO_DEBUG=1 shows the
    traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ZOO_DEBUG", None)
    argv = [sys.executable, "-m", "zoo.cli", "predict", SEG, str(tmp_path / "missing.png"),
            "--out", str(tmp_path / "o.png")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert "missing.png" in done.stderr and done.stdout == ""
    debug = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env={**env, "ZOO_DEBUG": "1"},
                           timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "missing.png" in debug.stderr
