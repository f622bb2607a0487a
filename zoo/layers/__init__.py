"""Blocks that several model families share, composed from :mod:`zoo.ops` (and imported by :mod:`zoo.models`).

A block belongs here once a second family uses it; a block only one family uses stays in its model file.
"""
from zoo.layers.anchors import DeviceAnchorGenerator
from zoo.layers.conv import ConvModule
from zoo.layers.fcos import centerness_targets, dice_loss, fcos_ious, fcos_losses, fcos_targets
from zoo.layers.heads import BaseDecodeHead, EncoderDecoder, FCNHead, fcn_head
from zoo.layers.lsdfn_branch import LSDFNBranch
from zoo.layers.norm import NormSpec, make_norm
from zoo.layers.resnet import (RESNET_DEPTHS, BasicBlock, Bottleneck, Conv2Factory, ResNet, dcn_conv2_factory,
                               freeze_stages, resnet, resnet_depth)
from zoo.layers.upsample import FixedBilinearUpsample, bilinear_kernel

__all__ = ["BaseDecodeHead", "BasicBlock", "Bottleneck", "Conv2Factory", "ConvModule", "DeviceAnchorGenerator",
           "EncoderDecoder", "FCNHead", "FixedBilinearUpsample", "LSDFNBranch", "NormSpec", "RESNET_DEPTHS", "ResNet",
           "bilinear_kernel", "centerness_targets", "dcn_conv2_factory", "dice_loss", "fcn_head", "fcos_ious",
           "fcos_losses", "fcos_targets", "freeze_stages", "make_norm", "resnet", "resnet_depth"]
