"""Image files <-> uint8 tensors (Pillow, which torchvision already depends on)."""
from __future__ import annotations

from pathlib import Path

import torch

from zoo.errors import InputError


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a 3 x H x W uint8 RGB tensor."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def write_png(image: torch.Tensor, path: str | Path) -> None:
    """Write a 3 x H x W (RGB), 1 x H x W or H x W (grey) uint8 tensor as PNG."""
    from PIL import Image

    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() not in (2, 3) or (image.dim() == 3 and image.shape[0] != 3):
        raise InputError(f"write_png needs a 3 x H x W, 1 x H x W or H x W image, got shape {tuple(image.shape)}")
    image = image.detach().to("cpu", torch.uint8)
    array = image.permute(1, 2, 0).contiguous() if image.dim() == 3 else image
    mode = "RGB" if image.dim() == 3 else "L"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes(mode, (array.shape[1], array.shape[0]), array.numpy().tobytes()).save(path)
