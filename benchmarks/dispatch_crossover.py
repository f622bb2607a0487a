"""Where the device-aware dispatch of zoo.ops switches implementation on the CPU: the measurements
behind the thresholds documented in the operators' ``*_implementation`` / ``*_rows`` functions.

Each row times the candidate implementations round-robin in one process (``_bench.interleaved_ms``),
by default on one intra-op thread and its CPU time, so that a loaded machine shifts every candidate
alike; ``--threads 2 --clock wall`` measures what a user of both cores sees on a quiet machine.

    python benchmarks/dispatch_crossover.py [--family per_sample_conv2d,lsdfn,deform] [--rounds 7]
                                            [--threads 1] [--clock cpu] [--out results/dispatch_crossover.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.ops import deform_conv2d as tv_deform_conv2d  # noqa: E402

from _bench import interleaved_ms  # noqa: E402
from zoo.ops.deform_conv import _deform_conv2d_sample_matmul  # noqa: E402
from zoo.ops.dynamic_filter import mix_kernels, per_sample_conv2d_implementation  # noqa: E402

lsdfn_module = sys.modules["zoo.ops.lsdfn"]  # the module (zoo.ops.lsdfn is also the function's name)

Row = tuple[str, dict[str, Callable[[], Any]], str]  # setting, candidates, what the dispatch picks

CPU = torch.device("cpu")


def per_sample_conv2d_rows() -> Iterator[Row]:
    """Grouped conv (batch folded into the groups) vs one F.conv2d per sample, kernels mixed from a
    bank of 4 as in DyConv; (in, out, size, groups, kernel) of typical dynamic layers."""
    shapes = [(64, 64, 56, 1, 3), (128, 128, 28, 1, 3), (256, 256, 14, 1, 3), (512, 512, 7, 1, 3),
              (96, 96, 56, 96, 3), (32, 32, 112, 32, 3), (960, 960, 7, 960, 3), (1024, 1024, 14, 1, 1)]
    for cin, cout, size, groups, k in shapes:
        for batch in (1, 2, 4, 8, 16):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(batch, cin, size, size, generator=g)
            bank = 0.05 * torch.randn(4, cout, cin // groups, k, k, generator=g)
            w, _ = mix_kernels(torch.rand(batch, 4, generator=g), bank, None)
            p = k // 2

            def grouped(x=x, w=w, p=p, groups=groups) -> torch.Tensor:
                b, c, h, ww = x.shape
                out = F.conv2d(x.reshape(1, b * c, h, ww), w.reshape(-1, *w.shape[2:]), None, 1, p, 1, groups * b)
                return out.view(b, -1, out.shape[-2], out.shape[-1])

            def loop(x=x, w=w, p=p, groups=groups) -> torch.Tensor:
                return torch.cat([F.conv2d(x[i: i + 1], w[i], None, 1, p, 1, groups) for i in range(x.shape[0])])

            setting = (f"{cin}->{cout} k={k} groups={groups} {size}x{size} B={batch} "
                       f"(kernels {w.numel():,}, input {x.numel():,})")
            yield setting, {"grouped": grouped, "loop": loop}, per_sample_conv2d_implementation(CPU, x.shape, w.shape)


def lsdfn_rows() -> Iterator[Row]:
    """The sample sum of LS-DFN's fast path (and the whole op) with all rows in one pass vs row tiles."""
    for c, co, k, s, gamma, h, w in [(256, 24, 3, 9, 2, 48, 64), (256, 24, 3, 5, 3, 41, 41)]:
        g = torch.Generator().manual_seed(0)
        args = (torch.randn(1, c, h, w, generator=g),
                0.05 * torch.randn(1, h, w, co, c, generator=g).permute(0, 3, 4, 1, 2),
                0.1 * torch.randn(1, co, k * k, h, w, generator=g), 0.1 * torch.randn(1, k * k, h, w, generator=g),
                0.1 * torch.randn(1, s * s, h, w, generator=g))
        pad = (s - 1) // 2 * gamma + k // 2
        fp = F.pad(args[0], (pad,) * 4).permute(0, 2, 3, 1).contiguous()
        weights = (args[4] + 1).permute(0, 2, 3, 1).unsqueeze(-1)
        chosen = lsdfn_module.lsdfn_window_rows(CPU, h, w, k * k, c)
        candidates = {}
        for rows in sorted({h, 1, 2, 4, 8, 16, chosen}):
            candidates[f"rows={rows}"] = (
                lambda rows=rows, fp=fp, weights=weights, s=s, k=k, gamma=gamma, h=h, w=w:
                lsdfn_module._window_sum(fp, weights, s, k, gamma, h, w, rows))
        yield f"sample sum, C={c} k={k} s={s} gamma={gamma} {h}x{w}", candidates, f"rows={chosen}"


def deform_rows() -> Iterator[Row]:
    """Modulated deformable convolution: F.grid_sample + matmul vs torchvision's CPU kernel (3x3)."""
    for b, c, size, dilation, dg in [(1, 512, (32, 32), 2, 1), (1, 256, (50, 68), 1, 1), (2, 512, (25, 34), 1, 4),
                                     (4, 64, (40, 40), 1, 1), (1, 16, (64, 64), 1, 1)]:
        g = torch.Generator().manual_seed(0)
        h, w = size
        x = torch.randn(b, c, h, w, generator=g)
        weight = 0.01 * torch.randn(c, c, 3, 3, generator=g)
        offset = torch.randn(b, 18 * dg, h, w, generator=g)
        mask = torch.rand(b, 9 * dg, h, w, generator=g)
        sp = ((1, 1), (dilation, dilation), (dilation, dilation))
        yield (f"B={b} C={c}->{c} {h}x{w} dilation {dilation} dg {dg}", {
            "sample_matmul": lambda x=x, o=offset, m=mask, wt=weight, sp=sp:
                _deform_conv2d_sample_matmul(x, o, wt, None, m, *sp),
            "torchvision": lambda x=x, o=offset, m=mask, wt=weight, sp=sp: tv_deform_conv2d(x, o, wt, None, *sp, m),
        }, "sample_matmul")


FAMILIES = {"per_sample_conv2d": per_sample_conv2d_rows, "lsdfn": lsdfn_rows, "deform": deform_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--out", default=str(HERE / "results" / "dispatch_crossover.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures the calling thread only: use it with --threads 1")

    rows = []
    print("| family | setting | ms per candidate | fastest | dispatch picks | pick's time / fastest |\n"
          "|---|---|---|---|---|---|")
    for family in args.family.split(","):
        for setting, candidates, picked in FAMILIES[family]():
            ms = interleaved_ms(candidates, args.rounds, args.clock)
            fastest = min(ms, key=ms.get)
            rows.append({"family": family, "setting": setting, "ms": ms, "fastest": fastest, "picked": picked})
            cells = ", ".join(f"{k} {v:.1f}" for k, v in ms.items())
            print(f"| {family} | {setting} | {cells} | {fastest} | {picked} | {ms[picked] / ms[fastest]:.2f} |",
                  flush=True)
    result = {
        "benchmark": "dispatch_crossover",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "clock": args.clock,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
