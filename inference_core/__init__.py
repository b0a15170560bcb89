"""Inference: the per-video session (:class:`InferenceCore`) and the interaction controllers."""
from inference_core.core import InferenceCore

__all__ = ["InferenceCore"]
