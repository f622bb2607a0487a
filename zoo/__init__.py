"""zoo: PyTorch model zoo for dynamic, deformable and dilated convolution networks.

>>> import zoo
>>> zoo.list_models("deeplab*")
>>> model = zoo.create("deeplabv3-r50")          # eval mode, .transforms / .postprocess / .info attached
"""
from zoo._version import __version__
from zoo import registry  # noqa: E402
from zoo.archs import list_archs, register_arch  # noqa: E402
from zoo.cards import model_card  # noqa: E402
from zoo.factory import create, get_transforms, model_info  # noqa: E402
from zoo.registry import ModelInfo, list_models  # noqa: E402

__all__ = [
    "ModelInfo",
    "create",
    "get_transforms",
    "list_archs",
    "list_models",
    "model_card",
    "model_info",
    "register_arch",
    "registry",
]
