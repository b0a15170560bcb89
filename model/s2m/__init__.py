"""Scribble-to-Mask (S2M): DeepLabV3+ on a 6-channel ResNet-50 (image, previous mask, scribbles)."""
from model.s2m.s2m_network import DeepLabV3Plus, DeepLabHeadV3Plus, deeplabv3plus_resnet50

__all__ = ["DeepLabV3Plus", "DeepLabHeadV3Plus", "deeplabv3plus_resnet50"]
