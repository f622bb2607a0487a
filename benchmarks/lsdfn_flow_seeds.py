"""LS-DFN's effect on optical flow at one fixed budget, over several seeds.

Both arms start from the same weights (``flownets-small.flyingshapes-28250``): the plain arm keeps training
FlowNetS-small, the LS-DFN arm is FlowNetS-small with the LS-DFN branch inserted and warm-started from the
same file (zero weights on the LS-DFN channels, so both arms compute the same function at step 0, the
paper's protocol of inserting the layer into a trained host). Each arm trains the same steps, learning
rate, data and seeds, then is evaluated on the held-out FlyingShapes pairs and the real FlyingChairs pairs
of ../shared/realdata (skipped when absent). Every command run is written into the JSON beside its result.

    python benchmarks/lsdfn_flow_seeds.py [--seeds 0 1 2] [--steps 1000] [--runs /tmp/lsdfn-seeds]
        [--out benchmarks/results/lsdfn_flow_seeds.json]
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
START = "flownets-small.flyingshapes-28250"
ARMS = {"plain": "flownets-small", "lsdfn": "flownets-lsdfn-small"}
TRAIN_DATA = "flying-shapes?object_motion=0.15,0.1,0.4"
CHAIRS = ROOT.parent / "shared" / "realdata" / "flyingchairs" / "data"


def _run(command: list[str]) -> None:
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def _evaluate(model: str, weights: Path, data: str, extra: list[str], out: Path) -> tuple[list[str], dict]:
    command = [sys.executable, "scripts/evaluate.py", "--data", data, *extra, "--model", model,
               "--checkpoint", str(weights), "--threads", "1", "--out", str(out)]
    _run(command)
    return command, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/lsdfn-seeds"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lsdfn_flow_seeds.json")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        for arm, model in ARMS.items():
            run = args.runs / f"{arm}-seed{seed}"
            train = [sys.executable, "scripts/train.py", "--model", model, "--warm-start", START, "--out", str(run),
                     "--data", TRAIN_DATA, "--size", "192", "256", "--batch-size", "8", "--steps", str(args.steps),
                     "--lr", str(args.lr), "--schedule", "poly", "--seed", str(seed), "--threads", "1",
                     "--no-progress", "--log-every", "100"]
            if not (run / "model.safetensors").is_file():
                _run(train)
            weights = run / "model.safetensors"
            row = {"arm": arm, "model": model, "seed": seed, "train": shlex.join(train)}
            command, result = _evaluate(model, weights, "flying-shapes:64", ["--size", "192", "256"],
                                        run / "eval-flyingshapes.json")
            row["flyingshapes_epe"], row["flyingshapes_command"] = result["epe"], shlex.join(command)
            if CHAIRS.is_dir():
                command, result = _evaluate(model, weights, f"flyingchairs:{CHAIRS}@all", [],
                                            run / "eval-flyingchairs.json")
                row["flyingchairs_epe"], row["flyingchairs_command"] = result["epe"], shlex.join(command)
            rows.append(row)
            print(json.dumps(row), flush=True)

    summary = {}
    for arm in ARMS:
        for key in ("flyingshapes_epe", "flyingchairs_epe"):
            values = [r[key] for r in rows if r["arm"] == arm and key in r]
            if values:
                summary[f"{arm}_{key}"] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                                           "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                                           "n": len(values)}
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
              "start": START, "steps": args.steps, "lr": args.lr, "seeds": args.seeds, "train_data": TRAIN_DATA,
              "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
