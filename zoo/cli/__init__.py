"""The ``zoo`` command: list, info, card, download, verify, publish, convert, predict.

The argument parser and :func:`main` live here; the command bodies in :mod:`zoo.cli.browse` (list, info, card,
site), :mod:`zoo.cli.weights` (download, verify, import, publish, convert) and :mod:`zoo.cli.run` (predict,
export, benchmark). ``python -m zoo.cli`` runs :func:`main` (``zoo/cli/__main__.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from zoo.cli.browse import cmd_card, cmd_info, cmd_list, cmd_site
from zoo.cli.run import cmd_benchmark, cmd_export, cmd_predict
from zoo.cli.weights import cmd_convert, cmd_download, cmd_import, cmd_publish, cmd_verify
from zoo.errors import ZooError


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
