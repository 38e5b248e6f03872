"""Do the maps point at what the model used? Scored on questions whose object boxes are known.

For each question about one object, the map of the answer's first token is scored by:
- pointing game: the map's strongest vision token lies on the asked object (its centre falls
  inside the object's box grown by half a token: a token-resolution map cannot point finer);
- deletion AUC: knock out vision tokens in the map's order (most important first) and follow the
  probability of the model's answer; a faithful map makes it fall fast (lower is better);
- insertion AUC: start with every vision token knocked out and restore them in the map's order
  (higher is better).
Baselines: a random map (seeded) and a centre-bias map. Every metric comes with its bootstrap
95% interval over questions, and maps are compared on the same questions (paired differences);
see docs/faithfulness.md.
"""

from __future__ import annotations

from .evaluate import BASELINES, MapSpec, evaluate, map_specs
from .items import BOX_COLUMNS, BoxItem, box_items, csv_items, shapes_items
from .result import FaithfulnessResult
from .scoring import auc, batched_curves, centre_map, curve_members, curve_steps, pointing_hit, spatial_entropy

__all__ = [
    "BASELINES",
    "BOX_COLUMNS",
    "BoxItem",
    "box_items",
    "FaithfulnessResult",
    "MapSpec",
    "auc",
    "batched_curves",
    "centre_map",
    "csv_items",
    "curve_members",
    "curve_steps",
    "evaluate",
    "map_specs",
    "pointing_hit",
    "shapes_items",
    "spatial_entropy",
]
