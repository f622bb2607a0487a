"""``zoo list``, ``info``, ``card`` and ``site``: the registry and the model cards in the terminal and on the site."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.errors import ZooError


def cmd_list(args: argparse.Namespace) -> int:
    import zoo
    from zoo.cards.index import format_row, index_row, sort_rows
    from zoo.cards.terminal import index_table
    from zoo.registry import TASKS

    if args.task is not None and args.task not in TASKS:
        raise ZooError(f"--task {args.task!r} is not a task; use one of: {', '.join(TASKS)}")
    rows = [index_row(zoo.model_info(name)) for name in zoo.list_models(args.pattern, task=args.task, pretrained=args.pretrained)]
    if not rows:
        filters = " with these filters" if args.task or args.pretrained else ""
        print(f"zoo list: no model matches {args.pattern!r}{filters} (patterns are shell-style: 'deeplab*'; "
              "`zoo list` shows every model)", file=sys.stderr)
        return 1
    if args.sort:
        rows = sort_rows(rows, args.sort, reverse=args.reverse)
    sys.stdout.write(index_table([format_row(r) for r in rows], wide=args.wide))
    return 0


def _lookup(name: str):
    """The registry record of NAME or NAME.TAG, and the tag (None for a bare name); an unknown tag is an error."""
    import zoo
    from zoo.factory import parse_name

    base, tag = parse_name(name)
    info = zoo.model_info(base)
    if tag is not None:
        info.weights_for(tag)
    return info, tag


def cmd_info(args: argparse.Namespace) -> int:
    from zoo.cards.terminal import info_text

    info, tag = _lookup(args.name)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(info_text(info, tag))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    import zoo
    from zoo.cards.terminal import render_markdown

    info, _ = _lookup(args.name)
    text = zoo.model_card(info.name)
    sys.stdout.write(text if args.markdown else render_markdown(text, width=args.width))
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from zoo.cards.site import build_site, site_problems

    if args.action == "check":
        problems = site_problems(args.outdir)
        for p in problems:
            print(p)
        if not problems:
            print(f"{args.outdir}: current")
        return 1 if problems else 0
    written = build_site(args.outdir)
    print(f"wrote {len(written)} files to {args.outdir}; open {Path(args.outdir) / 'index.html'}")
    return 0
