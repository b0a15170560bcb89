"""f-BRS click-to-mask inference: clicker, transforms, f-BRS-B predictor (L-BFGS over feature scale/bias)."""
from .clicker import Click, Clicker
from .predictor import FeatureBRSPredictor, build_fbrs_b_predictor
from .transforms import AddHorizontalFlip, LimitLongestSide, SigmoidForPred, ZoomIn

__all__ = ["Click", "Clicker", "FeatureBRSPredictor", "build_fbrs_b_predictor", "ZoomIn", "LimitLongestSide",
           "SigmoidForPred", "AddHorizontalFlip"]
