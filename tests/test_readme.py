"""README: the model table is generated from the registry and current; its commands exist; the install
command of "Run the tests" installs what the tests import; the Python API example runs as written."""
from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest

from zoo.cards.index import sync_readme
from zoo.cli import build_parser
from zoo.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


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
        pred = model.postprocess(model(model.transforms(image)), image.shape[-2:], image)[0]

    def miou(labels: torch.Tensor) -> float:
        ious = [((labels == c) & (truth == c)).sum() / ((labels == c) | (truth == c)).sum() for c in truth.unique()]
        return float(torch.stack(ious).mean())

    background = torch.zeros_like(truth)
    assert (pred == truth).float().mean() > (background == truth).float().mean()
    assert miou(pred) > miou(background) + 0.2, (miou(pred), miou(background))


# --------------------------------------------------------------------------- the install command of the tests
# Imported by tests but installed by no extra, with the reason the tests run without it.
OPTIONAL_IMPORTS = {
    "spatial_correlation_sampler": "outside reference of the correlation op: .ci/run builds it from source when it "
                                   "can, its comparisons skip without it",
}


def _section(title: str) -> str:
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _test_commands() -> tuple[list[str], str]:
    """The install command(s) "Run the tests" shows before the test command, and the test command (read as
    .ci/run reads it: the first line after the marker that is not a code fence)."""
    section = _section("Run the tests")
    before, marker, after = section.partition("<!-- test-command -->")
    assert marker, "the test command follows <!-- test-command --> in \"Run the tests\""
    installs = [line.strip() for line in before.splitlines() if line.strip().startswith("pip install")]
    command = next(line for line in after.splitlines() if line.strip() and not line.startswith("```"))
    return installs, command


def _installed_requirements(install: str) -> list[str]:
    """The requirements ``pip install [-e] .[EXTRAS]`` of this project installs (pyproject.toml)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11 (tomllib)")
    targets = [a for a in shlex.split(install)[2:] if not a.startswith("-")]
    assert len(targets) == 1, f"one target in {install!r}"
    match = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", targets[0])
    assert match, f"{install!r} installs this project (`.` or `.[EXTRAS]`)"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [e.strip() for e in (match.group(1) or "").split(",") if e.strip()]
    unknown = set(extras) - set(project["optional-dependencies"])
    assert not unknown, f"{install!r} names extras pyproject.toml does not define: {sorted(unknown)}"
    return project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]


def _closure(requirements: list[str]) -> tuple[set[str], list[str]]:
    """Distributions (canonical names) the requirements install with their dependencies, and the requirements
    that are not installed here."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [Requirement(r) for r in requirements]
    done: dict[str, set[str]] = {}
    missing = []
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), set(req.extras)
        if name in done and extras <= done[name]:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.append(str(req))
            continue
        done.setdefault(name, set()).update(extras)
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in sorted(extras) or [""]):
                todo.append(dep)
    return set(done), missing


def _imports(root: Path) -> dict[str, set[str]]:
    """Top-level modules imported under ``root`` (import statements and pytest.importorskip) -> files."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip" and node.args
                  and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_video_example_runs_offline_on_the_bundled_weights(tmp_path, monkeypatch):
    """The README's video command on the bundled sample frames (the shell expands the glob): offline, and the
    frames the model predicts are closer (MSE) to the sequence's true future than copying the last frame."""
    import shlex

    import torch

    import zoo
    from zoo.cli import main
    from zoo.data import MovingDigits

    section = README.read_text().split("## The main job", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("zoo predict dfn-moving-mnist")]
    assert len(lines) == 1, "the main job section shows one video command"
    argv = shlex.split(lines[0])
    frames = sorted(str(p.relative_to(README.parent)) for p in README.parent.glob(argv[3]))
    assert len(frames) == 10
    monkeypatch.chdir(README.parent)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "video.png"
    argv = argv[:3] + frames + argv[4:]
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv[1:]) == 0 and out.stat().st_size > 0

    sequence = MovingDigits(8, split="test", seed=20261122)[3]          # the samples' sequence (make_samples.py)
    model = zoo.create("dfn-moving-mnist", pretrained=True).eval()
    with torch.no_grad():
        pred = model(sequence["inputs"][None])[0]
    truth, last = sequence["targets"], sequence["inputs"][-1:]
    assert (pred - truth).square().mean() < (last - truth).square().mean()


def test_readme_installs_what_the_tests_need_before_running_them():
    """A new user runs the install command of "Run the tests", then the test command: every package the test
    run imports (the tests themselves, and zoo's optional imports they reach, e.g. scikit-image for the
    bundled weights' metrics) is installed by that command."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    installs, command = _test_commands()
    assert installs, "\"Run the tests\" shows the pip install command before the test command"
    assert shlex.split(command)[:3] == ["python", "-m", "pytest"]
    requirements = [r for install in installs for r in _installed_requirements(install)]
    assert any(r.startswith("pytest") for r in requirements), f"{installs} does not install pytest"
    installed, missing = _closure(requirements)
    assert not missing, f"{installs} installs {missing}, which are not installed here: run the command"

    tests = ROOT / "tests"
    local = {p.stem for p in tests.rglob("*.py")} | {p.name for p in tests.rglob("*") if p.is_dir()}
    providers = metadata.packages_distributions()
    imported = {**_imports(ROOT / "zoo"), **_imports(ROOT / "tests")}
    uncovered = {}
    for module, files in sorted(imported.items()):
        if module in sys.stdlib_module_names or module == "zoo" or module in local or module in OPTIONAL_IMPORTS:
            continue
        if not {canonicalize_name(d) for d in providers.get(module, [])} & installed:
            uncovered[module] = sorted(files)[:3]
    assert not uncovered, (f"imported by the test run but not installed by {' && '.join(installs)} (add them to the "
                           f"`test` extra in pyproject.toml): {uncovered}")


def test_evaluation_never_measures_on_other_textures(monkeypatch):
    """Without scikit-image the procedural data of the recorded metrics cannot be made: evaluation says so
    (naming the extra) instead of measuring on procedural textures."""
    from zoo.data import textures
    from zoo.evaluation import main

    monkeypatch.setattr(textures, "skimage_available", lambda: False)
    with pytest.raises(ImportError, match=r"dynzoo\[train\]"):
        main(["--data", "shapes-flat:1", "--size", "16", "16"])


# --------------------------------------------------------------------------------- the Python API example
def test_python_api_example_runs_offline_as_written(tmp_path, monkeypatch, capsys):
    """The README's Python API block, executed as written from the root of a clone (its sample image at
    zoo/samples/, its output file in the working directory): offline, on the bundled weights; the examples
    that need the internet are comments."""
    block = _section("Python API").split("```python\n", 1)[1].split("```", 1)[0]
    code = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not any('pretrained=True)' in line and "deeplabv3-r50" in line for line in code), \
        "the official-weights example needs internet: show it as a comment"
    assert any('zoo.create("deeplabv3-r50", pretrained=True)' in line for line in block.splitlines())
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "samples").symlink_to(ROOT / "zoo" / "samples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {}
    exec(compile(block, f"{README} (Python API)", "exec"), namespace)
    labels = namespace["labels"]
    assert labels.shape == (1, 128, 128) and labels.unique().numel() > 1
    assert str(labels.unique()) in capsys.readouterr().out
    assert (tmp_path / "my-weights.safetensors").is_file()
