#!/usr/bin/env python
"""Evaluate a zoo model on a dataset (thin CLI over :func:`zoo.evaluation.main`; see --help).

    python scripts/evaluate.py --data flyingchairs:../shared/realdata/flyingchairs/data \
        --model flownets --arch-override width=0.25 --checkpoint runs/fs/model.safetensors --out eval.json
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.evaluation import main  # noqa: E402

if __name__ == "__main__":
    main()
