"""f-BRS click-to-mask network (ResNet-50 v1s DeepLabV3+ with click distance maps)."""
from .distmaps_model import DistMapsModel, build_fbrs_model
from .dist_maps import DistMaps, click_distance_maps

__all__ = ["DistMapsModel", "DistMaps", "build_fbrs_model", "click_distance_maps"]
