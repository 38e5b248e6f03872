"""Token masking impact: which prompt words and which image regions the answer depends on.

    result = mask_impact(scope, Example("What colour is the circle?", images=["a.png"]), mode="vision")
    result.vision_map(token=0)   # [Nv] drop in log p(first answer token) per vision token
    result.save("out/")

Modules: `units` (what is masked), `prefix` (the clean run every variant starts from),
`perturbations` (what a variant's inputs are), `scoring` (the batched runs), `result`,
`options`, `config` (YAML batches), `maps` (masking as a map method).
"""

from .analysis import mask_impact, vision_importance
from .options import MaskingOptions
from .perturbations import EDGES, OCCLUSIONS, PERTURBATIONS
from .result import MaskingResult
from .units import Unit, build_units

__all__ = [
    "mask_impact",
    "vision_importance",
    "MaskingOptions",
    "MaskingResult",
    "Unit",
    "build_units",
    "PERTURBATIONS",
    "EDGES",
    "OCCLUSIONS",
]
