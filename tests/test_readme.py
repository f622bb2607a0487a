"""README: the model table is generated from the registry and current; its commands exist."""
from __future__ import annotations

import re
from pathlib import Path

from zoo.cli import build_parser
from zoo.docs import sync_readme
from zoo.registry import default_registry

README = Path(__file__).resolve().parents[1] / "README.md"


def test_model_table_is_current():
    assert not sync_readme(README, write=False), "README model table is stale: run `python scripts/sync_readme.py`"
    text = README.read_text()
    for info in default_registry():
        assert f"| `{info.name}` |" in text


def test_readme_names_a_test_command_and_real_cli_commands():
    text = README.read_text()
    assert re.search(r"<!-- test-command -->\n```bash\npython -m pytest", text)
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for used in re.findall(r"^zoo (\w+)", text, flags=re.M):
        assert used in commands, f"README uses `zoo {used}`, which the CLI does not have"


def _main_job_command() -> list[str]:
    import shlex

    section = README.read_text().split("## The main job", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    install, _, command = block.partition(" && ")
    assert install.startswith("pip install"), "the main job is one command: install && run"
    return shlex.split(command)


def test_main_job_runs_offline_on_the_bundled_weights(tmp_path, monkeypatch):
    """The README's main job, as a new user runs it after installing: offline, bundled weights; the flow
    it writes is closer to the sample's exact flow than zero flow is."""
    from zoo.cli import main
    from zoo.flow import read_flo

    argv = _main_job_command()
    assert argv[:2] == ["zoo", "predict"]
    monkeypatch.chdir(README.parent)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, flo = tmp_path / "flow.png", tmp_path / "flow.flo"
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv[1:] + ["--flo", str(flo)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    truth = read_flo(README.parent / "zoo" / "samples" / "flying_shapes_flow.flo")
    epe = (read_flo(flo) - truth).norm(dim=0).mean()
    assert epe < truth.norm(dim=0).mean(), f"bundled model EPE {float(epe):.2f} px is not better than zero flow"


def test_segmentation_example_runs_offline_on_the_bundled_weights(tmp_path, monkeypatch):
    """The README's segmentation command on the bundled sample: offline, and the labels it predicts
    (same model through the Python API) beat "background everywhere" on the sample's class map."""
    import shlex

    import torch

    import zoo
    from zoo.cli import main
    from zoo.io import read_image

    section = README.read_text().split("## The main job", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("zoo predict deeplabv2-lsdfn-small")]
    assert len(lines) == 1, "the main job section shows one segmentation command"
    argv = shlex.split(lines[0])
    monkeypatch.chdir(README.parent)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "mask.png"
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv[1:]) == 0 and out.stat().st_size > 0

    model = zoo.create("deeplabv2-lsdfn-small", pretrained=True).eval()
    image = read_image(README.parent / argv[3])[None]
    truth = read_image(README.parent / "zoo" / "samples" / "shapes_flat_label.png")[0].long()
    with torch.no_grad():
        pred = model.postprocess(model(model.transforms(image)), image.shape[-2:])[0]

    def miou(labels: torch.Tensor) -> float:
        ious = [((labels == c) & (truth == c)).sum() / ((labels == c) | (truth == c)).sum() for c in truth.unique()]
        return float(torch.stack(ious).mean())

    background = torch.zeros_like(truth)
    assert (pred == truth).float().mean() > (background == truth).float().mean()
    assert miou(pred) > miou(background) + 0.2, (miou(pred), miou(background))
