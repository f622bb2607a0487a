#!/usr/bin/env python
"""Evaluate a zoo model on a dataset (thin CLI over :func:`zoo.evaluation.main`; see --help).

    python scripts/evaluate.py --data flyingchairs:../shared/realdata/flyingchairs/data \
        --model flownets --arch-override width=0.25 --checkpoint runs/fs/model.safetensors --out eval.json
    python scripts/evaluate.py --data coco:/data/coco@instances_val2017.json --model mask-rcnn-r50-dcn \
        --pretrained default --out coco.json                      # box / mask AP (needs pycocotools)
    python scripts/evaluate.py --data rgbd-sod:/data/RGBD_SOD/SSD --model hdfnet-vgg16 --out sod.json
    python scripts/evaluate.py --data imagefolder:/data/imagenet/val --model drn-c-26 --out top1.json
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.evaluation import main  # noqa: E402

if __name__ == "__main__":
    main()
