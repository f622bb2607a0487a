"""The ``zoo`` command: list, info, card, download, verify, publish, convert, predict."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from zoo.errors import InputError, ZooError


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


def _check_device(name: str) -> None:
    """Refuse a device torch does not know, or one this machine does not have, before any model is built."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ZooError(f"--device {name!r} is not a device torch knows; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ZooError(f"--device {name}: CUDA is not available on this machine (no GPU or driver, or torch "
                           f"{torch.__version__} built without CUDA); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ZooError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    if backend is None or not hasattr(backend, "is_available"):
        raise ZooError(f"--device {name}: zoo predict runs on cpu, cuda[:N] or mps")
    if not backend.is_available():
        raise ZooError(f"--device {name}: {device.type} is not available on this machine; use --device cpu")


def _check_writable(path: str, option: str, suffix: str) -> None:
    """Refuse an output path that cannot be written (:func:`zoo.io.check_writable`) or has the wrong
    extension, before the model is built or run."""
    from zoo.io import check_writable

    out = Path(path)
    if out.suffix.lower() != suffix and not out.is_dir():
        raise ZooError(f"{option} {path}: give a {suffix} file name, e.g. {out.with_suffix(suffix)}")
    try:
        check_writable(out)
    except ZooError as exc:
        raise ZooError(f"{option}: {exc}") from None


def _read_input(path: str):
    """An input image of ``zoo predict`` (zoo.io.read_image); a file that is missing or not an image is a
    one-line error naming it."""
    from zoo.io import read_image

    try:
        return read_image(path)
    except OSError as exc:  # missing, unreadable, empty or not an image (PIL's UnidentifiedImageError is an OSError)
        if isinstance(exc, FileNotFoundError):
            raise InputError(f"the image {path} does not exist; check the path") from exc
        reason = exc.strerror or " ".join(str(exc).split())
        raise InputError(f"cannot read the image {path} ({reason}); give a PNG or JPEG file") from exc


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from zoo.factory import parse_overrides
    from zoo.io import write_png
    from zoo.tasks import get_task
    from zoo.weights import PICKLE_SUFFIXES

    info, tag = _lookup(args.name)
    task = get_task(info.task)
    if task.predict is None:
        raise ZooError(f"zoo predict does not handle {task.words}; use the Python API (model card, Usage)")
    if tag is not None and (args.checkpoint or args.random_weights):
        raise ZooError(f"{args.name} names the registry weights {tag!r}; with "
                       f"{'--checkpoint' if args.checkpoint else '--random-weights'} give the bare name {info.name}")
    if args.checkpoint and args.random_weights:
        raise ZooError("give --checkpoint PATH (your weights) or --random-weights (a smoke run), not both")
    pretrained = not (args.checkpoint or args.random_weights)
    if pretrained and info.default_tag is None and tag is None:
        from zoo.registry import no_weights_message

        raise ZooError(f"{no_weights_message(info)}; in `zoo predict`: --checkpoint PATH, or --random-weights for a "
                       "smoke run")
    if len(args.images) != task.predict.num_inputs:
        raise ZooError(f"{info.name} ({info.task}) takes {task.predict.inputs}, got {len(args.images)} file(s)")
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise ZooError(f"--checkpoint {args.checkpoint} does not exist; give the path of your weights file")
    if args.checkpoint and Path(args.checkpoint).suffix in PICKLE_SUFFIXES and not args.allow_pickle:
        raise ZooError(f"--checkpoint {args.checkpoint} is a pickle checkpoint; pass --allow-pickle to read it with "
                       "torch.load(weights_only=True), or convert it to safetensors")
    # Everything that can be checked without the model is checked first: device, output paths, input files.
    _check_device(args.device)
    _check_writable(args.out, "--out", ".png")
    if args.flo:
        _check_writable(args.flo, "--flo", ".flo")
    inputs = [_read_input(p) for p in args.images]                                    # 3 x H x W each
    if task.predict.check is not None:
        task.predict.check(info.name, inputs, args.images)
    model = zoo.create(args.name, pretrained=pretrained, checkpoint=args.checkpoint, device=args.device,
                       allow_pickle=args.allow_pickle, **parse_overrides(args.arch_override))
    inputs = [x.to(args.device) for x in inputs]
    with torch.inference_mode():
        picture, summary = task.predict.draw(model, inputs, args)
    write_png(picture.cpu(), args.out)
    print(json.dumps({"out": str(args.out), **summary}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.export import export, max_difference

    exported = export(args.name, args.out, format=args.format, size=tuple(args.size) if args.size else None,
                      dynamic_batch=args.dynamic_batch, with_transforms=args.with_transforms,
                      random_init=args.random_init)
    meta = exported.metadata
    weights = f"{meta['entry']}.{meta['tag']} (sha256 {meta['weights_sha256'][:12]})" if meta["tag"] else "random init"
    shapes = ", ".join(f"{i['name']} {tuple(i['shape'])} {i['dtype']}" for i in meta["inputs"])
    print(f"wrote {exported.path} ({args.format}): {weights}; inputs {shapes}")
    if args.check:
        difference = max_difference(exported)
        print(f"check: largest |exported - eager| = {difference:.3g} (tolerance {args.tolerance:g})")
        return 0 if difference <= args.tolerance else 1
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import zoo
    from zoo.benchmark import benchmark
    from zoo.cards.terminal import benchmark_table
    from zoo.io import write_atomic

    if args.all == bool(args.name):
        raise ZooError("give a model name or --all (with an optional --pattern)")
    names = zoo.list_models(args.pattern) if args.all else [zoo.model_info(args.name).name]
    options = dict(batch=args.batch, size=tuple(args.size) if args.size else None, dtype=args.dtype,
                   channels_last=args.channels_last, runtime="compile" if args.compile else args.runtime,
                   train=args.train, device=args.device, warmup=args.warmup, repeats=args.repeats)
    results = []
    from rich.progress import track

    for name in track(names, description="benchmark", transient=True, disable=len(names) < 2 or not sys.stderr.isatty(),
                      console=None):
        results.append(dataclasses.asdict(benchmark(name, **options)))
    sys.stdout.write(benchmark_table(results))
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from zoo.upstream import convert_file

    print(json.dumps(convert_file(args.source, args.src, args.dst), indent=2))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: what is wrong, and where the usage is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_browse_commands(sub) -> None:
    """list, info, card, site."""
    from zoo.cards.index import SORT_KEYS

    s = sub.add_parser("list", help="list models")
    s.add_argument("pattern", nargs="?", default="*")
    s.add_argument("--task")
    s.add_argument("--pretrained", action="store_true", help="only models with published weights")
    s.add_argument("--sort", choices=sorted(SORT_KEYS), help="sort by this column (default: name)")
    s.add_argument("--reverse", action="store_true", help="reverse the sort order")
    s.add_argument("--wide", action="store_true",
                   help="show every cell whole (by default long cells are cut with '…' to fit the terminal)")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("info", help="summary of a model: task, paper, licence, input size, transforms, weights tags")
    s.add_argument("name", help="NAME or NAME.TAG")
    s.add_argument("--json", action="store_true", help="the whole registry record as JSON")
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


def _add_weights_commands(sub) -> None:
    """download, verify, import, publish, convert."""
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

    s = sub.add_parser("export", help="export a model (optionally with its transforms) to ONNX or torch.export .pt2")
    s.add_argument("name", help="NAME (default weights) or NAME.TAG")
    s.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    s.add_argument("--out", required=True, help="output file (.onnx / .pt2)")
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the entry's input_size)")
    s.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (1..1024)")
    s.add_argument("--with-transforms", action="store_true", help="fuse the inference transforms: the file takes uint8 images")
    s.add_argument("--random-init", action="store_true", help="export random weights (entries without weights)")
    s.add_argument("--check", action="store_true",
                   help="run the file (onnxruntime / torch.export.load) against the eager model; exit 1 above --tolerance")
    s.add_argument("--tolerance", type=float, default=1e-3, help="largest absolute difference --check accepts")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("benchmark", help="latency, throughput, peak memory, parameters and GFLOPs (random weights)")
    s.add_argument("name", nargs="?", help="a registry name")
    s.add_argument("--all", action="store_true", help="every entry matching --pattern")
    s.add_argument("--pattern", default="*", help="with --all: shell-style name pattern, e.g. 'drn-*'")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the entry's input_size)")
    s.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    s.add_argument("--channels-last", action="store_true")
    s.add_argument("--runtime", choices=("eager", "compile", "onnxruntime"), default="eager")
    s.add_argument("--compile", action="store_true", help="same as --runtime compile")
    s.add_argument("--train", action="store_true", help="forward + backward of the summed outputs")
    s.add_argument("--device", default="cpu")
    s.add_argument("--warmup", type=int, default=3, help="untimed calls first (the first is reported apart)")
    s.add_argument("--repeats", type=int, default=10, help="timed calls (median and percentiles)")
    s.add_argument("--json", help="also write the results to this JSON file")
    s.set_defaults(fn=cmd_benchmark)

    s = sub.add_parser("convert", help="convert an official checkpoint to zoo's layout (safetensors)")
    s.add_argument("source", help="converter name, e.g. torchvision-deeplabv3 (see zoo.converters)")
    s.add_argument("src", help="the official checkpoint (read with torch.load(weights_only=True))")
    s.add_argument("dst", help="output .safetensors")
    s.set_defaults(fn=cmd_convert)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zoo", description="Dynamic, deformable and dilated convolution model zoo",
                epilog="Errors are one line on stderr (exit code 2); ZOO_DEBUG=1 shows the traceback.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_browse_commands(sub)
    _add_weights_commands(sub)

    s = sub.add_parser("predict", help="run a model on an image (or several frames) and write a colour-coded PNG")
    s.add_argument("name")
    s.add_argument("images", nargs="+", help="one image; two frames for optical flow; RGB + depth for RGB-D saliency; "
                                             "ten frames for video prediction")
    s.add_argument("--out", required=True)
    s.add_argument("--flo", help="optical flow: also write the flow as a .flo file")
    s.add_argument("--checkpoint", help="your weights file (safetensors; a pickle .pth needs --allow-pickle)")
    s.add_argument("--allow-pickle", action="store_true",
                   help="accept a pickle --checkpoint (.pth, .pt, ...), read with torch.load(weights_only=True)")
    s.add_argument("--arch-override", action="append", metavar="KEY=VALUE",
                   help="constructor argument (YAML value), e.g. width=0.25 for a checkpoint of a small variant")
    s.add_argument("--random-weights", action="store_true", help="random init (smoke test only)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    s.add_argument("--alpha", type=float, default=0.5)
    s.add_argument("--score-threshold", type=float, default=0.5, help="detection: boxes drawn above this score")
    s.set_defaults(fn=cmd_predict)
    return p


def _message(exc: BaseException) -> str:
    """``exc`` as one line (an OSError as ``FILE: reason``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        files = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{files}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a user error is one line on stderr and exit code 2 (130 when interrupted), its
    traceback only with ZOO_DEBUG=1."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error printed by _Parser.error (2)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    debug = os.environ.get("ZOO_DEBUG", "") not in ("", "0")
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"zoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo list | head`: the reader left; nothing more to say
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except (ZooError, OSError) as exc:
        if debug:
            raise
        print(f"zoo {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
