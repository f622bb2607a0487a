"""The ``zoo`` command: list, info, card, download, verify, publish, convert, predict."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from zoo.errors import ZooError


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


_SORT_KEYS = {"model": "name", "task": "task", "params": "params", "gflops": "gflops", "metric": "metric"}


def cmd_list(args: argparse.Namespace) -> int:
    import zoo
    from zoo.docs import INDEX_COLUMNS, format_row, index_row

    rows = [index_row(zoo.model_info(name)) for name in zoo.list_models(args.pattern, task=args.task, pretrained=args.pretrained)]
    if args.sort:
        key = _SORT_KEYS[args.sort]
        if key == "metric":  # entries without a metric last, then by metric name and value
            present = sorted((r for r in rows if r["metric"]), key=lambda r: (r["metric"]["metric"], r["metric"]["value"]),
                             reverse=args.reverse)
            rows = present + [r for r in rows if not r["metric"]]
        else:
            rows.sort(key=lambda r: r[key], reverse=args.reverse)
    shown = [format_row(r) for r in rows]
    print(_table([[r[c] for c in INDEX_COLUMNS] for r in shown], list(INDEX_COLUMNS)))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import zoo

    print(json.dumps(zoo.model_info(args.name).to_dict(), indent=2))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    import zoo
    from zoo.terminal import render_markdown

    text = zoo.model_card(args.name)
    sys.stdout.write(text if args.markdown else render_markdown(text, width=args.width))
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from zoo.site import build_site, site_problems

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


def _targets(name: str | None, all_: bool) -> list[tuple[str, str]]:
    import zoo
    from zoo.factory import parse_name
    from zoo.registry import default_registry

    if all_:
        return [(i.name, t) for i in default_registry() for t in sorted(i.weights)]
    if not name:
        raise ZooError("give a model name or --all")
    base, tag = parse_name(name)
    info = zoo.model_info(base)
    info.weights_for(tag)
    return [(base, tag or info.default_tag)]


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
    from zoo.publish import publish

    entry = publish(args.name, args.weights, args.repo_id, tag=args.tag, endpoint=args.endpoint, token=args.token,
                    dry_run=args.dry_run, force=args.force, allow_pickle=args.allow_pickle, out_dir=args.out_dir,
                    store=args.store, dtype=args.dtype)
    print(json.dumps(entry, indent=2))
    return 0


def _overrides(pairs: list[str] | None) -> dict:
    import yaml

    out = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ZooError(f"--arch-override takes KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


PREDICT_INPUTS = {"optical-flow": "two frames", "salient-object-detection": "an RGB image and its depth map"}


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from zoo.io import read_image, write_png

    info = zoo.model_info(args.name)
    pretrained = not (args.checkpoint or args.random_weights)
    if pretrained and info.default_tag is None and "." not in args.name:
        from zoo.registry import no_weights_message

        raise ZooError(f"{no_weights_message(info)}; in `zoo predict`: --checkpoint PATH, or --random-weights for a "
                       "smoke run")
    wanted = 2 if info.task in PREDICT_INPUTS else 1
    if len(args.images) != wanted:
        raise ZooError(f"{info.name} ({info.task}) takes {PREDICT_INPUTS.get(info.task, 'one image')}, "
                       f"got {len(args.images)} file(s)")
    if info.task == "video-prediction":
        raise ZooError("zoo predict does not handle video prediction; use the Python API (model card, Usage)")
    model = zoo.create(args.name, pretrained=pretrained, checkpoint=args.checkpoint, device=args.device,
                       **_overrides(args.arch_override))
    if info.task == "optical-flow":
        images = torch.stack([read_image(p) for p in args.images]).to(args.device)    # (2, 3, H, W)
    else:
        images = read_image(args.images[0]).unsqueeze(0).to(args.device)               # (1, 3, H, W)
    with torch.inference_mode():
        picture, summary = _PREDICTORS[info.task](model, images, args)
    write_png(picture.cpu(), args.out)
    print(json.dumps({"out": str(args.out), **summary}))
    return 0


def _predict_segmentation(model, images, args):
    from zoo.visualize import blend, colourise_labels

    labels = model.postprocess(model(model.transforms(images)), images.shape[-2:])
    return blend(images, colourise_labels(labels), alpha=args.alpha)[0], {"classes": labels.unique().tolist()}


def _predict_flow(model, frames, args):
    from zoo.flow import flow_to_color, write_flo

    pair = frames.unsqueeze(0)                                                       # (1, 2, 3, H, W)
    flow = model.postprocess(model(model.transforms(pair)), pair.shape[-2:])
    if args.flo:
        write_flo(flow[0], args.flo)
    return flow_to_color(flow)[0], {"flo": args.flo, "max_flow_px": round(float(flow.norm(dim=1).max()), 3)}


def _predict_detection(model, images, args):
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    det = model.postprocess(model(model.transforms(images)), images.shape[-2:])[0]
    keep = det["scores"] >= args.score_threshold
    picture = images[0].cpu()
    if "masks" in det and keep.any():
        picture = draw_segmentation_masks(picture, det["masks"][keep].cpu().bool().reshape(-1, *picture.shape[-2:]), alpha=0.5)
    if keep.any():
        labels = [f"{int(c)}: {float(s):.2f}" for c, s in zip(det["labels"][keep], det["scores"][keep])]
        picture = draw_bounding_boxes(picture, det["boxes"][keep].cpu(), labels=labels, width=2)
    return picture, {"detections": int(keep.sum()), "labels": det["labels"][keep].tolist()}


def _predict_classification(model, images, args):
    top = model.postprocess(model(model.transforms(images)))
    return images[0], {"labels": top["labels"][0].tolist(), "scores": [round(float(v), 4) for v in top["scores"][0]]}


def _predict_saliency(model, images, args):
    import torch

    from zoo.io import read_image

    depth = read_image(args.images[1])[:1].unsqueeze(0).to(images.device).float() / 255.0
    saliency = model.postprocess(model(*model.transforms(images, depth)), images.shape[-2:])   # (1, H, W)
    return (saliency[0] * 255).round().clamp(0, 255).to(torch.uint8), {"mean_saliency": round(float(saliency.mean()), 4)}


_PREDICTORS = {
    "semantic-segmentation": _predict_segmentation,
    "optical-flow": _predict_flow,
    "object-detection": _predict_detection,
    "instance-segmentation": _predict_detection,
    "image-classification": _predict_classification,
    "salient-object-detection": _predict_saliency,
}


def cmd_convert(args: argparse.Namespace) -> int:
    from zoo.converters import convert_file

    print(json.dumps(convert_file(args.source, args.src, args.dst), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="Dynamic, deformable and dilated convolution model zoo")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list models")
    s.add_argument("pattern", nargs="?", default="*")
    s.add_argument("--task")
    s.add_argument("--pretrained", action="store_true", help="only models with published weights")
    s.add_argument("--sort", choices=sorted(_SORT_KEYS), help="sort by this column (default: name)")
    s.add_argument("--reverse", action="store_true", help="reverse the sort order")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("info", help="registry record of a model (JSON)")
    s.add_argument("name")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("card", help="print a model card (laid out for the terminal)")
    s.add_argument("name")
    s.add_argument("--markdown", action="store_true", help="print the card's Markdown source as is")
    s.add_argument("--width", type=int, help="line width (default: the terminal's, at most 100)")
    s.set_defaults(fn=cmd_card)

    s = sub.add_parser("site", help="build (or check) the static site of the zoo")
    s.add_argument("action", choices=["build", "check"], help="build: write the site; check: exit 1 if it is stale")
    s.add_argument("outdir")
    s.set_defaults(fn=cmd_site)

    for command, fn, help_ in (("download", cmd_download, "download (and convert) and verify weights"),
                               ("verify", cmd_verify, "re-hash downloaded weights")):
        s = sub.add_parser(command, help=help_)
        s.add_argument("name", nargs="?", help="NAME or NAME.TAG")
        s.add_argument("--all", action="store_true", help="every tag of every entry")
        s.add_argument("--cache-dir")
        if command == "download":
            s.add_argument("--dry-run", action="store_true", help="list source, URL, hash, converter, licence; fetch nothing")
            s.add_argument("--force", action="store_true", help="fetch again and replace the cached copy")
        s.set_defaults(fn=fn)

    s = sub.add_parser("import", help="check, convert and cache an official file downloaded by hand")
    s.add_argument("name", help="NAME.TAG of an upstream or manual weights tag")
    s.add_argument("file", help="the official file as downloaded")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("publish", help="publish weights to a Hub repository")
    s.add_argument("name")
    s.add_argument("--weights", help="the file to publish (default with NAME.TAG: that tag's verified local file, "
                                     "e.g. an official upstream file converted by zoo)")
    s.add_argument("--repo-id", required=True)
    s.add_argument("--tag")
    s.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    s.add_argument("--token")
    s.add_argument("--dry-run", action="store_true", help="write the files, upload nothing")
    s.add_argument("--out-dir", help="where --dry-run writes the files")
    s.add_argument("--store", help="publish into a local weights store (e.g. zoo/weights_store) instead of a Hub")
    s.add_argument("--force", action="store_true", help="move an existing tag")
    s.add_argument("--allow-pickle", action="store_true", help="accept a .pth file (read with weights_only=True)")
    s.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   help="store floating-point tensors in this type (default: as given)")
    s.set_defaults(fn=cmd_publish)

    s = sub.add_parser("convert", help="convert an official checkpoint to zoo's layout (safetensors)")
    s.add_argument("source", help="converter name, e.g. torchvision-deeplabv3 (see zoo.converters)")
    s.add_argument("src", help="the official checkpoint (read with torch.load(weights_only=True))")
    s.add_argument("dst", help="output .safetensors")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("predict", help="run a model on an image (or two frames) and write a colour-coded PNG")
    s.add_argument("name")
    s.add_argument("images", nargs="+", help="one image; two frames for optical flow; RGB + depth for RGB-D saliency")
    s.add_argument("--out", required=True)
    s.add_argument("--flo", help="optical flow: also write the flow as a .flo file")
    s.add_argument("--checkpoint")
    s.add_argument("--arch-override", action="append", metavar="KEY=VALUE",
                   help="constructor argument (YAML value), e.g. width=0.25 for a checkpoint of a small variant")
    s.add_argument("--random-weights", action="store_true", help="random init (smoke test only)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--alpha", type=float, default=0.5)
    s.add_argument("--score-threshold", type=float, default=0.5, help="detection: boxes drawn above this score")
    s.set_defaults(fn=cmd_predict)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ZooError as exc:
        print(f"zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
