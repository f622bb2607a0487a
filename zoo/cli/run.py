"""``zoo predict``, ``export`` and ``benchmark``: running a model."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.cli.browse import _lookup
from zoo.errors import InputError, ZooError


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
