"""The ``resnet`` constructor: ResNet-18/34/50/101/152 classifiers and dilated backbones.

The network and its options are :mod:`zoo.layers.resnet` (every ResNet-based family builds on it);
this module registers it as a model and keeps the names importable from here.
"""
from zoo.archs import register_arch
from zoo.layers.norm import make_norm
from zoo.layers.resnet import BasicBlock, Bottleneck, ResNet, freeze_stages, resnet

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "freeze_stages", "make_norm", "resnet"]

register_arch("resnet", resnet)
