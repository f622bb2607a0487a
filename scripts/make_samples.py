"""Regenerate the sample frame pair, segmentation scene and digit sequence shipped in zoo/samples (needs scikit-image and
scikit-learn: pip install dynzoo[train])."""
from pathlib import Path

import torch

from zoo.data import FlyingShapes, MovingDigits, Shapes
from zoo.flow import write_flo
from zoo.io import write_png

def write_moving_digits(out: Path) -> None:
    """The 10 observed frames of a held-out (test-digit) Moving-MNIST-style sequence: moving_digits_01..10.png."""
    sequence = MovingDigits(8, split="test", seed=20261122)[3]["inputs"]
    for i, frame in enumerate(sequence, 1):
        write_png((frame * 255).round().clamp(0, 255).to(torch.uint8), out / f"moving_digits_{i:02d}.png")


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "zoo" / "samples"
    sample = FlyingShapes(size=(192, 256), seed=20261122, textures="skimage")[7]
    for i in (1, 2):
        write_png((sample[f"image{i}"] * 255).round().clamp(0, 255).to(torch.uint8), out / f"flying_shapes_{i}.png")
    write_flo(sample["flow"], out / "flying_shapes_flow.flo")
    scene = Shapes(size=(128, 128), seed=20261122, textures="skimage")[3]
    write_png((scene["image"] * 255).round().clamp(0, 255).to(torch.uint8), out / "shapes.png")
    write_png(scene["label"].to(torch.uint8).unsqueeze(0), out / "shapes_label.png")
    flat = Shapes(size=(128, 128), seed=20261122, textures="skimage", background="flat")[3]
    write_png((flat["image"] * 255).round().clamp(0, 255).to(torch.uint8), out / "shapes_flat.png")
    write_png(flat["label"].to(torch.uint8).unsqueeze(0), out / "shapes_flat_label.png")
    write_moving_digits(out)
    print("wrote", out)
