"""``zoo site build OUTDIR``: a static site of the zoo, generated from the registry and the model cards.

Output: ``index.html`` (every entry; search, task and "has pretrained weights" filters, sortable
columns) and ``models/<name>.html`` (one page per entry, rendered from its card); the pages
(:mod:`zoo.cards.pages`) are self-contained and work from ``file://``.

The output is deterministic (no timestamps), so :func:`site_problems` can tell whether a built site
is stale relative to the registry, the cards and ``model_stats.json``: it regenerates every file in
memory and compares.

:func:`build_site` writes only into a new or empty directory, or one it built before: its marker file
``.dynzoo-site`` (a version line, then the files the build wrote) is the only licence to replace or
remove a file, so files it did not write are never touched. Every file is written atomically.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from zoo.cards import card_path
from zoo.cards.index import index_row
from zoo.cards.pages import index_html, model_html
from zoo.errors import RegistryError, SiteError
from zoo.io import write_atomic
from zoo.registry import ModelInfo, default_registry

def site_files(infos: Iterable[ModelInfo] | None = None) -> dict[str, str]:
    """Every file of the site (relative path -> text) for ``infos`` (default: the whole registry)."""
    infos = list(default_registry() if infos is None else infos)
    missing = [i.name for i in infos if not card_path(i).is_file()]
    if missing:
        raise RegistryError(f"no model card for {', '.join(missing)}: write model_cards/<name>.md "
                            "(see CONTRIBUTING.md) and run `python scripts/sync_cards.py`")
    files = {"index.html": index_html([index_row(i) for i in infos])}
    for info in infos:
        files[f"models/{info.name}.html"] = model_html(info)
    return files


SITE_MARKER = ".dynzoo-site"
_MARKER_VERSION = "dynzoo-site 1"
_SITE_FILE = re.compile(r"^(index\.html|models/[A-Za-z0-9][A-Za-z0-9._-]*\.html)$")


def _read_manifest(outdir: Path) -> set[str] | None:
    """The files an earlier build of ``outdir`` wrote (from its marker); None when it has no marker."""
    marker = outdir / SITE_MARKER
    if not os.path.lexists(marker):
        return None
    redo = f"move {outdir}'s files away (or choose a new or empty directory) and run `zoo site build` again"
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteError(f"cannot read the site marker {marker} ({exc}); {redo}") from None
    if not lines or lines[0] != _MARKER_VERSION:
        first = lines[0] if lines else ""
        raise SiteError(f"{marker}: first line is {first!r}, expected {_MARKER_VERSION!r} (a marker of another "
                        f"version of zoo, or not zoo's); {redo}")
    files = set()
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("#"):
            continue
        if not _SITE_FILE.match(line):
            raise SiteError(f"{marker}, line {number}: {line!r} is not a file of the site; {redo}")
        files.add(line)
    return files


def _owned_files(outdir: Path) -> set[str]:
    """The files ``build_site`` may replace or remove in ``outdir``; raises unless the directory is new,
    empty, or marked by an earlier build."""
    if not os.path.lexists(outdir):
        return set()
    if not outdir.is_dir():
        raise SiteError(f"{outdir} exists and is not a directory; give `zoo site build` a new or empty directory")
    files = _read_manifest(outdir)
    if files is not None:
        return files
    try:
        empty = next(os.scandir(outdir), None) is None
    except OSError as exc:
        raise SiteError(f"cannot list {outdir}: {exc.strerror}") from None
    if not empty:
        raise SiteError(f"{outdir} is not empty and was not written by `zoo site build` (it has no {SITE_MARKER} "
                        "file); the site is only written into a new or empty directory, or one an earlier build "
                        "wrote: choose a new directory, or move the files in this one away")
    return set()


def _write_marker(outdir: Path, files: Iterable[str]) -> None:
    lines = [_MARKER_VERSION, "# written by `zoo site build`: the files it wrote, the only ones it replaces or removes",
             *sorted(files)]
    write_atomic(outdir / SITE_MARKER, "\n".join(lines) + "\n")


def build_site(outdir: str | Path, infos: Iterable[ModelInfo] | None = None) -> list[Path]:
    """Write the site to ``outdir``: a new or empty directory, or one an earlier build wrote (see
    :data:`SITE_MARKER`). Pages of entries no longer in the registry are removed if the earlier build
    wrote them; files it did not write are never replaced or removed."""
    outdir = Path(outdir)
    files = site_files(infos)
    unsafe = [rel for rel in files if not _SITE_FILE.match(rel)]
    if unsafe:
        raise RegistryError(f"{', '.join(unsafe)}: not a safe file name for a page; model names are lowercase "
                            "letters, digits and '-'")
    owned = _owned_files(outdir)
    clashes = sorted(rel for rel in files if rel not in owned and os.path.lexists(outdir / rel))
    if clashes:
        raise SiteError(f"{outdir}: files that `zoo site build` did not write are in the way: {', '.join(clashes)} "
                        f"(its {SITE_MARKER} file does not list them); move them away and build again")
    written = []
    try:
        (outdir / "models").mkdir(parents=True, exist_ok=True)
        _write_marker(outdir, owned | set(files))  # first: an interrupted build still knows its files
        for rel, text in files.items():
            path = outdir / rel
            write_atomic(path, text)
            written.append(path)
        for rel in sorted(owned - set(files)):
            path = outdir / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
        _write_marker(outdir, files)
    except OSError as exc:
        raise SiteError(f"cannot write the site to {outdir}: {exc}") from None
    return written


def site_problems(outdir: str | Path, infos: Iterable[ModelInfo] | None = None) -> list[str]:
    """Why the site in ``outdir`` differs from what the registry, cards and stats give now (empty: current)."""
    outdir = Path(outdir)
    files = site_files(infos)
    rebuild = f" (rebuild with `zoo site build {outdir}`)"
    out = []
    for rel, text in files.items():
        path = outdir / rel
        if not path.is_file():
            out.append(f"{rel}: missing{rebuild}")
        elif path.read_text(encoding="utf-8") != text:
            out.append(f"{rel}: stale{rebuild}")
    try:
        owned = _owned_files(outdir)
    except SiteError as exc:
        return [*out, str(exc)]
    for path in sorted((outdir / "models").glob("*.html")) if (outdir / "models").is_dir() else []:
        rel = f"models/{path.name}"
        if rel not in files:
            out.append(f"{rel}: no such registry entry{rebuild}" if rel in owned else
                       f"{rel}: no such registry entry, and not written by `zoo site build`: remove it")
    return out
