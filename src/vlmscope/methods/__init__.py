"""Methods that explain an answer: map methods (one class each, listed in `registry`) and the
token-masking analysis. Everything the README shows is importable from here."""

from .answer import Answer
from .base import MapMethod
from .gradient import GradientRelevancy
from .masking import MaskingOptions, MaskingResult, mask_impact, vision_importance
from .masking.maps import MaskingMap
from .raw import RawAttention
from .registry import MAP_METHODS, explain, map_method
from .rollout import Rollout
from .token_maps import TokenMaps

__all__ = [
    "Answer",
    "MapMethod",
    "TokenMaps",
    "MAP_METHODS",
    "map_method",
    "explain",
    "RawAttention",
    "Rollout",
    "GradientRelevancy",
    "MaskingMap",
    "mask_impact",
    "vision_importance",
    "MaskingOptions",
    "MaskingResult",
]
