"""Blocks that several model families share, composed from :mod:`zoo.ops` (and imported by :mod:`zoo.models`).

A block belongs here once a second family uses it; a block only one family uses stays in its model file.
"""
from zoo.layers.anchors import DeviceAnchorGenerator
from zoo.layers.conv import ConvModule
from zoo.layers.fcos import centerness_targets, dice_loss, fcos_ious, fcos_losses, fcos_targets
from zoo.layers.heads import BaseDecodeHead, EncoderDecoder, FCNHead, fcn_head, segmentation_outputs
from zoo.layers.lsdfn_branch import LSDFNBranch
from zoo.layers.norm import NormSpec, make_norm
from zoo.layers.resnet import (RESNET_DEPTHS, BasicBlock, Bottleneck, Conv2Factory, ResNet, dcn_conv2_factory,
                               freeze_stages, resnet, resnet_depth)
from zoo.layers.rfcn import (RFCN, RFCNBackbone, RFCNRoIHeads, RFCNRPNHead, inclusive_roi_rows, ps_roi_vote,
                             rfcn_detector, rfcn_detector_args)
from zoo.layers.upsample import FixedBilinearUpsample, bilinear_kernel

__all__ = ["BaseDecodeHead", "BasicBlock", "Bottleneck", "Conv2Factory", "ConvModule", "DeviceAnchorGenerator",
           "EncoderDecoder", "FCNHead", "FixedBilinearUpsample", "LSDFNBranch", "NormSpec", "RESNET_DEPTHS", "RFCN",
           "RFCNBackbone", "RFCNRPNHead", "RFCNRoIHeads", "ResNet", "bilinear_kernel", "centerness_targets",
           "dcn_conv2_factory", "dice_loss", "fcn_head", "fcos_ious", "fcos_losses", "fcos_targets", "freeze_stages",
           "inclusive_roi_rows", "make_norm", "ps_roi_vote", "resnet", "resnet_depth", "rfcn_detector",
           "rfcn_detector_args", "segmentation_outputs"]
