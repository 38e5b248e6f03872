"""Dataset-scale feature extraction: presets, the batched and resumable runner, scale-out.

from vlmscope.data.sources import open_source
from vlmscope.extraction import extract, make_preset
summary = extract(scope, open_source("vqa.csv", images_dir="images/"), "features/", make_preset("halp"))
"""

from .presets import PRESETS, make_preset
from .runner import Summary, extract

__all__ = ["extract", "make_preset", "PRESETS", "Summary"]
