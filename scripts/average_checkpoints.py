#!/usr/bin/env python
"""Average the weights of several checkpoints of one run into a safetensors file (thin CLI over
:func:`zoo.training.average_checkpoints` and, with ``--bn-data``, :func:`zoo.training.recompute_batchnorm`).

    python scripts/average_checkpoints.py --out avg.safetensors --dtype float16 \
        runs/fc/checkpoint-0005000.pt runs/fc/checkpoint-0005250.pt ...
    python scripts/average_checkpoints.py --out avg.safetensors --dtype float16 \
        --model flownetc-lsdfn-small --bn-data flying-shapes --size 192 256 runs/fc/checkpoint-00*.pt
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from zoo.factory import parse_overrides  # noqa: E402
from zoo.training import average_checkpoints, recompute_batchnorm  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="training .pt checkpoints or safetensors files of one architecture")
    parser.add_argument("--out", required=True, help="output safetensors file")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                        help="dtype of the averaged floating tensors (default: as stored)")
    bn = parser.add_argument_group("BatchNorm statistics of the average (SWA's update_bn)")
    bn.add_argument("--bn-data", default=None, metavar="SPEC",
                    help="recompute the BatchNorm running statistics on this training data spec (needs --model)")
    bn.add_argument("--model", default=None, help="registry name of the checkpoints' architecture")
    bn.add_argument("--arch-override", action="append", default=[], metavar="KEY=VALUE",
                    help="constructor arguments the run was trained with")
    bn.add_argument("--size", type=int, nargs=2, default=[192, 256], metavar=("H", "W"))
    bn.add_argument("--bn-batches", type=int, default=100)
    bn.add_argument("--bn-batch-size", type=int, default=8)
    bn.add_argument("--bn-seed", type=int, default=1000, help="data seed (keep it apart from training and evaluation)")
    bn.add_argument("--textures", default="auto", choices=("auto", "skimage", "procedural"))
    args = parser.parse_args(argv)
    if args.bn_data is not None and args.model is None:
        parser.error("--bn-data needs --model (the registry name of the checkpoints' architecture)")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    state = average_checkpoints(args.files, dtype=None if args.bn_data else dtype)
    if args.bn_data is not None:
        import zoo

        model = zoo.create(args.model, **parse_overrides(args.arch_override))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        layers = recompute_batchnorm(model, args.bn_data, batches=args.bn_batches, batch_size=args.bn_batch_size,
                                     size=tuple(args.size), seed=args.bn_seed, textures=args.textures)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous()
                 for k, v in model.state_dict().items()}
        print(f"recomputed the running statistics of {layers} BatchNorm layers on {args.bn_batches} batches of {args.bn_data}")
    save_file(state, args.out)
    print(f"averaged {len(args.files)} checkpoints into {args.out} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
