"""The original ``dataset/range_transform.py`` names on top of :mod:`util.image_util` (the one place for
normalisation constants)."""
from __future__ import annotations

from torchvision import transforms

from util.image_util import IM_MEAN, IM_MEAN_255, IM_STD, denormalize

# Fill colour (0-255) for affine / crop borders of training augmentations.
im_mean = IM_MEAN_255
# ImageNet normalisation of a 3×H×W float tensor in [0, 1].
im_normalization = transforms.Normalize(mean=IM_MEAN, std=IM_STD)
# Inverse of im_normalization, clamped to [0, 1].
inv_im_trans = denormalize
