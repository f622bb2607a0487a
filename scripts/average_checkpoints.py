#!/usr/bin/env python
"""Average the weights of several checkpoints of one run into a safetensors file (thin CLI over
:func:`zoo.training.average_checkpoints`).

    python scripts/average_checkpoints.py --out avg.safetensors --dtype float16 \
        runs/fc/checkpoint-0005000.pt runs/fc/checkpoint-0005250.pt ...
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from zoo.training import average_checkpoints  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="training .pt checkpoints or safetensors files of one architecture")
    parser.add_argument("--out", required=True, help="output safetensors file")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                        help="dtype of the averaged floating tensors (default: as stored)")
    args = parser.parse_args(argv)
    state = average_checkpoints(args.files, dtype=getattr(torch, args.dtype) if args.dtype else None)
    save_file(state, args.out)
    print(f"averaged {len(args.files)} checkpoints into {args.out} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
