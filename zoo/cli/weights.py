"""``zoo download``, ``verify``, ``import``, ``publish`` and ``convert``: weights files."""
from __future__ import annotations

import argparse
import json

from zoo.cli.browse import _lookup
from zoo.errors import ZooError


def _targets(name: str | None, all_: bool) -> list[tuple[str, str]]:
    from zoo.registry import default_registry

    if all_:
        return [(i.name, t) for i in default_registry() for t in sorted(i.weights)]
    if not name:
        raise ZooError("give a model name or --all")
    info, tag = _lookup(name)
    info.weights_for(tag)
    return [(info.name, tag or info.default_tag)]


def cmd_download(args: argparse.Namespace) -> int:
    import zoo
    from zoo import weights as W

    for name, tag in _targets(args.name, args.all):
        info = zoo.model_info(name)
        if args.dry_run:
            print(json.dumps(_describe_tag(info, tag)))
            continue
        if info.weights[tag].manual is not None and info.weights[tag].hub is None and args.all:
            from zoo.upstream import cached_converted

            if cached_converted(info, tag) is None:
                print(f"{name}.{tag}: manual download needed, skipped (zoo download {name}.{tag} says how)")
                continue
        path = W.resolve(info, tag, cache_dir=args.cache_dir, force_download=args.force)
        print(f"{name}.{tag}: {path}")
    return 0


def _describe_tag(info, tag: str) -> dict:
    """What ``zoo download --dry-run`` prints for one tag: where from, hash, converter, licence, local copy."""
    from zoo import weights as W

    w = info.weights[tag]
    out = {"name": f"{info.name}.{tag}", "kind": w.kind, "license": w.license}
    if w.hub is not None:
        out["hub"] = f"{w.hub.repo}@{w.hub.revision}/{w.hub.file}"
        out["sha256"] = w.hub.sha256
    spec = w.upstream or w.manual
    if spec is not None:
        out["url" if w.upstream else "page"] = w.upstream.url if w.upstream else w.manual.page
        out["upstream_sha256"] = spec.sha256
        out["converter"] = spec.converter
    if w.warm_start:
        out["warm_start"] = w.warm_start
    local = W.local_copy(info, tag, cache_dir=None)
    out["local"] = str(local) if local is not None else None
    return out


def cmd_import(args: argparse.Namespace) -> int:
    import zoo
    from zoo.factory import parse_name
    from zoo.upstream import import_file

    base, tag = parse_name(args.name)
    if tag is None:
        raise ZooError(f"give the weights as NAME.TAG (tags of {base}: {', '.join(sorted(zoo.model_info(base).weights)) or 'none'})")
    path = import_file(zoo.model_info(base), tag, args.file)
    print(f"{base}.{tag}: {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import zoo
    from zoo import weights as W
    from zoo.errors import ChecksumError

    failed = 0
    for name, tag in _targets(args.name, args.all or not args.name):
        info = zoo.model_info(name)
        path = W.local_copy(info, tag, cache_dir=args.cache_dir)
        if path is None:
            print(f"{name}.{tag}: not downloaded")
            continue
        try:
            W.verify_local(info, tag, path)
            print(f"{name}.{tag}: ok  {path}")
        except ChecksumError as exc:
            failed += 1
            print(f"{name}.{tag}: FAILED  {exc}")
    return 1 if failed else 0


def cmd_publish(args: argparse.Namespace) -> int:
    from zoo.cards.publish import hub_error, publish

    try:
        entry = publish(args.name, args.weights, args.repo_id, tag=args.tag, endpoint=args.endpoint, token=args.token,
                        dry_run=args.dry_run, force=args.force, allow_pickle=args.allow_pickle, out_dir=args.out_dir,
                        store=args.store, dtype=args.dtype)
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - the HTTP client's errors, recognised by hub_error or re-raised
        error = hub_error(exc, args.endpoint)
        if error is None:
            raise
        raise error from exc
    print(json.dumps(entry, indent=2))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from zoo.upstream import convert_file

    print(json.dumps(convert_file(args.source, args.src, args.dst), indent=2))
    return 0
