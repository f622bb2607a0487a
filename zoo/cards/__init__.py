"""Model cards and everything that shows the zoo to people: ``model_cards/<name>.md``, half hand-written,
half generated from the registry (this module), and the package's other views of the registry:

- :mod:`zoo.cards.index`: index rows (the README model table, ``zoo list``, the site index);
- :mod:`zoo.cards.stats`: parameter and FLOP counts, cached in ``zoo/model_stats.json``;
- :mod:`zoo.cards.markdown`: the one Markdown parser of the cards (markdown-it-py) and their safe HTML;
- :mod:`zoo.cards.site`: the static site (``zoo site build``), its pages in :mod:`zoo.cards.pages`
  and their inline CSS and JS in :mod:`zoo.cards.assets`;
- :mod:`zoo.cards.terminal`: cards and the model list laid out for a terminal (``zoo card``, ``zoo list``);
- :mod:`zoo.cards.publish`: releases of weights with their card (``zoo publish``).

The core (:mod:`zoo.registry`, :mod:`zoo.weights`, :mod:`zoo.factory`) never imports this package.

A card has Hugging Face front matter and these sections, in order:

- hand-written: ``Summary``, ``Architecture``, ``Limitations``;
- generated from ``registry.yaml`` (never edited by hand): front matter, ``Paper and citation``,
  ``Weights``, ``Transforms``, ``Usage``.

``sync_card`` regenerates the generated parts and keeps the prose; ``scripts/sync_cards.py`` runs it over
every entry and a test fails when a card is stale, so cards cannot drift from the registry.
"""
from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path

import yaml

from zoo import __version__
from zoo.errors import RegistryError
from zoo.io import write_atomic
from zoo.registry import ModelInfo, Weights, categories, default_registry, thaw
from zoo.tasks import get_task

HAND_SECTIONS = ("Summary", "Architecture", "Limitations")
ORDER = ("Summary", "Architecture", "Paper and citation", "Weights", "Transforms", "Usage", "Limitations")
GENERATED_NOTE = "<!-- generated from registry.yaml by scripts/sync_cards.py: edit the registry, not this section -->"


def cards_dir() -> Path:
    return Path(str(resources.files("zoo").joinpath("model_cards")))


def card_path(info: ModelInfo) -> Path:
    return cards_dir() / info.card


def model_card(name: str) -> str:
    """The Markdown model card of ``name`` (``name.tag`` accepted)."""
    from zoo.factory import model_info

    info = model_info(name)
    path = card_path(info)
    if not path.is_file():
        raise RegistryError(f"entry {info.name!r}, field 'card': {path} does not exist")
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ parsing
def split_card(text: str) -> tuple[dict, dict[str, str]]:
    """Front matter and the body of each ``## `` section (title -> text)."""
    front: dict = {}
    body = text
    m = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    if m:
        front = yaml.safe_load(m.group(1)) or {}
        body = text[m.end():]
    sections: dict[str, str] = {}
    current = None
    for line in body.splitlines(keepends=True):
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line
    return front, {k: v.strip("\n") for k, v in sections.items()}


# ------------------------------------------------------------------------------------ generation
def front_matter(info: ModelInfo) -> dict:
    metrics = [(w, m) for w in info.weights.values() for m in w.metrics]
    front: dict = {
        "license": info.license,
        "library_name": "dynzoo",
        "tags": ["dynzoo", "pytorch", info.task, info.arch],
    }
    pipeline_tag = get_task(info.task).pipeline_tag
    if pipeline_tag is not None:
        front["pipeline_tag"] = pipeline_tag
    datasets = sorted({m.dataset for _, m in metrics})
    if datasets:
        front["datasets"] = datasets
    if metrics:
        results = []
        for w, m in metrics:
            results.append({
                "task": {"type": info.task},
                "dataset": {"name": m.dataset, "type": m.dataset, "split": m.split},
                "metrics": [{"type": m.metric, "value": m.value, "name": f"{m.metric} ({w.tag})"}],
            })
        front["model-index"] = [{"name": info.name, "results": results}]
    return front


def bibtex(info: ModelInfo) -> str:
    p = info.paper
    first = re.sub(r"[^A-Za-z]", "", p.authors.split(",")[0].split(" and ")[0].strip().split(" ")[-1]).lower()
    word = re.sub(r"[^A-Za-z]", "", p.title.split()[0]).lower()
    lines = [f"@article{{{first}{p.year}{word},", f"  title = {{{p.title}}},",
             f"  author = {{{' and '.join(a.strip() for a in p.authors.split(','))}}},",
             f"  journal = {{{p.venue}}},", f"  year = {{{p.year}}},"]
    if p.arxiv:
        lines.append(f"  eprint = {{{p.arxiv}}},")
        lines.append("  archivePrefix = {arXiv},")
    if p.url:
        lines.append(f"  url = {{{p.url}}},")
    lines.append("}")
    return "\n".join(lines)


def _paper_section(info: ModelInfo) -> str:
    p = info.paper
    link = f"[{p.title}]({p.link})" if p.link else p.title
    return f"{link}. {p.authors}. {p.venue}, {p.year}.\n\n```bibtex\n{bibtex(info)}\n```"


def _weights_where(info: ModelInfo, w: Weights, this_release: str | None) -> str:
    """Where ``pretrained=`` gets the file of ``w``, in the order it tries."""
    parts = []
    if w.hub is not None:
        from zoo.weights import BUNDLED_STORE

        revision = "this commit" if w.tag == this_release else f"`{w.hub.revision[:12]}`"
        bundled = " (bundled in the package)" if (BUNDLED_STORE / w.hub.repo / w.hub.revision / w.hub.file).is_file() else ""
        parts.append(f"Hub `{w.hub.repo}` @ {revision}, `{w.hub.file}`, {w.hub.size:,} B, sha256 "
                     f"`{w.hub.sha256[:16]}…`{bundled}")
    if w.upstream is not None:
        sha = w.upstream.sha256
        checked = (f"sha256 `{sha[:16]}{'…' if len(sha) > 16 else ''}`" if sha else
                   "no hash published upstream: the first download's sha256 is recorded")
        parts.append(f"official file <{w.upstream.url}> ({checked}, converter `{w.upstream.converter}`, "
                     f"cited from `{w.upstream.cited_from}`)")
    if w.manual is not None:
        parts.append(f"manual download of `{w.manual.file_name}` from <{w.manual.page}>, then "
                     f"`zoo import {info.name}.{w.tag} FILE` (converter `{w.manual.converter}`)")
    if w.warm_start is not None:
        parts.append(f"warm start: `{w.warm_start}` expanded into this network (same outputs as the host)")
    return "; then ".join(parts)


def _weights_section(info: ModelInfo, this_release: str | None = None) -> str:
    if not info.weights:
        return ("No weights are published for this model anywhere: nobody released any and this project publishes\n"
                "none, so `pretrained=True` raises an error naming the nearest entry with weights. Build it\n"
                "with random initialisation, load your own file with `checkpoint=`, or convert an official\n"
                "checkpoint with `zoo convert`.")
    items = []
    for w in info.weights.values():
        default = " (default)" if w.tag == info.default_tag else ""
        transforms = f"`{w.transforms.preset}` {_inline(thaw(w.transforms.args))}" if w.transforms else "the entry's"
        classes = f"; {len(categories(w.categories))} categories (`{w.categories}`)" if w.categories else ""
        items.append(f"- `{w.tag}`{default}: {w.source}. License {w.license}; transforms {transforms}{classes}. "
                     f"File: {_weights_where(info, w, this_release)}.")
    metric_rows = ["| tag | dataset | split | metric | value | by | how / where |", "|---|---|---|---|---|---|---|"]
    for w in info.weights.values():
        for m in w.metrics:
            cells = [f"`{w.tag}`", m.dataset, m.split, m.metric, f"{m.value:g}", m.by, m.evidence]
            metric_rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if not w.metrics:
            metric_rows.append(f"| `{w.tag}` | - | - | - | - | - | not evaluated here; no number reported upstream |")
    return "\n".join(items) + "\n\n" + "\n".join(metric_rows)


def _cell(text: str) -> str:
    """Text for a pipe-table cell: GFM ends a cell at every unescaped ``|``, even inside a code span."""
    return str(text).replace("|", "\\|")


def _inline(args: dict) -> str:
    return yaml.safe_dump(args, default_flow_style=True, width=10**6).strip() if args else ""


def _transforms_section(info: ModelInfo) -> str:
    spec = {"transforms": info.transforms.to_dict(), "postprocess": info.postprocess.to_dict()}
    text = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None).strip()
    return f"Input size for reports: {list(info.input_size)}.\n\n```yaml\n{text}\n```"


def _usage_section(info: ModelInfo) -> str:
    warm = next((t for t, w in info.weights.items() if w.warm_start), None)
    if info.default_tag is not None:
        create = f'zoo.create("{info.name}", pretrained=True)'
    elif warm is not None:
        create = (f'zoo.create("{info.name}", pretrained="{warm}")  # the host\'s weights, LS-DFN branch '
                  'inactive: a start for fine-tuning')
    else:
        create = f'zoo.create("{info.name}")  # no weights exist: random initialisation'

    body = get_task(info.task).usage
    return (f"```python\nimport torch, zoo\nfrom zoo.io import read_image\n\nmodel = {create}\n"
            f"{body}\n```\n\nCommand line: `zoo info {info.name}`, `zoo card {info.name}`.")


def generated_sections(info: ModelInfo, this_release: str | None = None) -> dict[str, str]:
    return {
        "Paper and citation": _paper_section(info),
        "Weights": _weights_section(info, this_release),
        "Transforms": _transforms_section(info),
        "Usage": _usage_section(info),
    }


def render_card(info: ModelInfo, hand: dict[str, str], *, this_release: str | None = None) -> str:
    """The full card text from the registry record and the hand-written sections (``this_release``: the tag
    whose weights row names "this commit" as its revision; see :func:`release_card`)."""
    missing = [s for s in HAND_SECTIONS if not hand.get(s, "").strip()]
    if missing:
        raise RegistryError(f"card {info.card} for {info.name!r} lacks hand-written section(s): {', '.join(missing)}")
    generated = generated_sections(info, this_release)
    parts = ["---", yaml.safe_dump(front_matter(info), sort_keys=False).strip(), "---", "",
             f"# {info.name}", ""]
    for title in ORDER:
        parts.append(f"## {title}")
        parts.append("")
        if title in generated:
            parts.append(GENERATED_NOTE)
            parts.append("")
            parts.append(generated[title])
        else:
            parts.append(hand[title].strip())
        parts.append("")
    return "\n".join(parts)


def sync_card(info: ModelInfo, text: str) -> str:
    _, sections = split_card(text)
    return render_card(info, {s: sections.get(s, "") for s in HAND_SECTIONS})


def card_problems(info: ModelInfo) -> list[str]:
    """Why the card of ``info`` is missing, incomplete or stale (empty when it is current)."""
    path = card_path(info)
    if not path.is_file():
        return [f"{info.name}: card {path} does not exist"]
    text = path.read_text(encoding="utf-8")
    try:
        expected = sync_card(info, text)
    except RegistryError as exc:
        return [str(exc)]
    if text != expected:
        return [f"{info.name}: card {path.name} is stale; run `python scripts/sync_cards.py`"]
    return []


def sync_all(write: bool = True) -> list[str]:
    """Regenerate every card's generated parts; returns the names whose card changed."""
    changed = []
    for info in default_registry():
        path = card_path(info)
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        new = sync_card(info, text)
        if new != text:
            changed.append(info.name)
            if write:
                write_atomic(path, new)
    return changed


def release_card(info: ModelInfo, tag: str | None, *, sha256: str, size: int) -> str:
    """The README.md published with the weights of ``tag``: the current card, whose weights row for ``tag``
    describes the file being published (its sha256 and size) and gives "this commit" as its revision, because
    a commit cannot contain its own hash (the registry records the revision after publishing). A ``tag`` not
    in the registry yet leaves the table as the registry has it. The card is a snapshot: later edits of
    ``model_cards/<name>.md`` reach the Hub only with the next release."""
    _, sections = split_card(card_path(info).read_text(encoding="utf-8")) if card_path(info).is_file() else ({}, {})
    hand = {s: sections.get(s) or f"See the dynzoo model card of `{info.name}`." for s in HAND_SECTIONS}
    this_release = tag if tag in info.weights and info.weights[tag].hub is not None else None
    if this_release is not None:
        w = info.weights[tag]
        published = dataclasses.replace(w, hub=dataclasses.replace(w.hub, sha256=sha256, size=size))
        info = dataclasses.replace(info, weights={**info.weights, tag: published})
    text = render_card(info, hand, this_release=this_release)
    return text + f"\nPublished with dynzoo {__version__}.\n"
