#!/usr/bin/env python
"""Train a zoo registry model (thin CLI over :func:`zoo.training.main`; see --help).

    python scripts/train.py --model flownets --arch-override width=0.25 --data flying-shapes \
        --steps 20000 --batch-size 8 --lr 5e-4 --out runs/flownets-0.25 --workers 1
    torchrun --nproc_per_node 2 scripts/train.py ...   # DistributedDataParallel on gloo
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.training import main  # noqa: E402

if __name__ == "__main__":
    main()
