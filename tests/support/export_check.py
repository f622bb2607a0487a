"""torch.export checks of the model tests."""
from __future__ import annotations

import torch
from torch import nn


def exported_and_eager(model: nn.Module, *inputs: torch.Tensor) -> tuple[object, object]:
    """``torch.export.export(model, inputs)``'s module and ``model`` itself run on ``inputs`` (without
    autograd): ``(exported output, eager output)``, for the test to compare with its own tolerance."""
    exported = torch.export.export(model, inputs)
    with torch.no_grad():
        return exported.module()(*inputs), model(*inputs)
