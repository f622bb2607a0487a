"""Operator benchmarks: fast path vs the plain reference (and outside references where installed).

Every (case, implementation) runs in a fresh process so that peak memory is its own: the peak resident
memory of the first call above the memory held after setting up inputs (Linux VmHWM, reset after setup). Times are medians of ``repeats`` calls after a
warm-up, without autograd. Ratios are taken against the case's baseline in the same run.

    python benchmarks/ops.py [--only lsdfn,correlation] [--repeats 5] [--threads 1 --clock cpu]
                             [--out benchmarks/results/ops.json]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import resource
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from _bench import time_ms  # noqa: E402


def case_modules(only: set[str] | None) -> list[str]:
    import op_cases

    names = sorted(m.name for m in pkgutil.iter_modules(op_cases.__path__))
    return [n for n in names if only is None or n in only]


def worker(module: str, index: int, impl: str, repeats: int, clock: str = "wall") -> dict:
    case = importlib.import_module(f"op_cases.{module}").cases()[index]
    fns = case.setup()
    fn = fns[impl]
    # Peak memory of the first call above what the process holds after setup: reset the kernel's
    # high-water mark (VmHWM) first where Linux allows it, else fall back to ru_maxrss.
    before = _rss_kb()
    resettable = _reset_peak()
    base_peak = before if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        fn()
    after = _status_kb("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ms = time_ms(fn, repeats=case.repeats if repeats <= 0 else repeats, warmup=0, clock=clock)
    return {"ms": ms, "peak_extra_mb": max(after - base_peak, 0) / 1024.0, "peak_method": "VmHWM" if resettable else "ru_maxrss"}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _rss_kb() -> int:
    try:
        return _status_kb("VmRSS")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_isolated(module: str, index: int, impl: str, repeats: int, threads: int = 0, clock: str = "wall") -> dict:
    cmd = [sys.executable, __file__, "--worker", f"{module}:{index}:{impl}", "--repeats", str(repeats),
           "--threads", str(threads), "--clock", clock]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(result: dict) -> str:
    """The rows of a result JSON as a Markdown table (ratios against each case's baseline)."""
    lines = ["| op | setting | implementation | ms | peak MB | speed-up | memory ratio |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        speed = next((f"{v:g}x vs {k[len('speedup_vs_'):]}" for k, v in r.items() if k.startswith("speedup_vs_")), "")
        memory = next((f"{v:g}x" for k, v in r.items() if k.startswith("memory_ratio_vs_")), "")
        ms = f"{r['ms']:.1f}" if "ms" in r else r.get("error", "")
        peak = f"{r['peak_extra_mb']:.1f}" if "peak_extra_mb" in r else ""
        lines.append(f"| {r['op']} | {r['setting']} | {r['impl']} | {ms} | {peak} | {speed} | {memory} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated op_cases modules")
    parser.add_argument("--repeats", type=int, default=0, help="override each case's repeats")
    parser.add_argument("--out", default=str(HERE / "results" / "ops.json"))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads in each worker (0: torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or the CPU time of the calling thread (meaningful with --threads 1: "
                             "on a loaded machine it leaves out the time spent waiting for a core)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--table", metavar="JSON", help="print a result file as a Markdown table and exit")
    args = parser.parse_args()

    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        parser.error("--clock cpu measures the calling thread only: use it with --threads 1")
    if args.worker:
        module, index, impl = args.worker.split(":")
        print(json.dumps(worker(module, int(index), impl, args.repeats, args.clock)))
        return

    only = set(args.only.split(",")) if args.only else None
    rows = []
    for module in case_modules(only):
        for index, case in enumerate(importlib.import_module(f"op_cases.{module}").cases()):
            impls = list(case.setup().keys())
            results = {impl: run_isolated(module, index, impl, args.repeats, args.threads, args.clock)
                       for impl in impls}
            base = results.get(case.baseline, {})
            for impl, r in results.items():
                row = {"op": case.op, "setting": case.setting, "impl": impl, **r}
                if "ms" in r and "ms" in base:
                    row["speedup_vs_" + case.baseline] = round(base["ms"] / r["ms"], 2)
                    if r["peak_extra_mb"] > 0:
                        row["memory_ratio_vs_" + case.baseline] = round(base["peak_extra_mb"] / r["peak_extra_mb"], 2)
                rows.append(row)
                print(f"{case.op:28s} {case.setting:44s} {impl:28s} "
                      + (f"{r['ms']:10.2f} ms  peak +{r['peak_extra_mb']:8.1f} MB" if "ms" in r else r["error"]),
                      flush=True)
    result = {
        "benchmark": "ops",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))


if __name__ == "__main__":
    main()
