"""Which object does the answer depend on? Ground truth from counterfactual scenes.

A map is faithful when it points at what the model used, which need not be the object the
question names: a model that answers "left" from a distractor of the same colour uses the
distractor. On synthetic scenes the counterfactual is exact: paint one object over with the
background (`Scene.without`), run the model on that image, and measure how far the distribution
of the answer's first token moves (KL divergence from the original scene). The object whose
removal moves it most is the one the answer relies on. This uses the pixels and the whole model
(vision tower included), so it is independent of every map method's own perturbation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..masking.prefix import clean_run

if TYPE_CHECKING:
    from ...scope import Scope
    from ..answer import Answer
    from .items import BoxItem


@dataclass(frozen=True)
class Reliance:
    kl: list[float]  # per object of the scene: KL(original || without it) of the first answer token
    relied: int  # the object whose removal moves the answer most
    asked: int  # the object the question is about

    @property
    def on_asked(self) -> bool:
        return self.relied == self.asked

    def to_dict(self) -> dict:
        return {"kl": [round(k, 6) for k in self.kl], "relied": self.relied, "asked": self.asked}


@torch.inference_mode()
def reliance(scope: Scope, item: BoxItem, answer: Answer, clean_logp: torch.Tensor) -> Reliance | None:
    """The `Reliance` of `answer` on the objects of `item`'s scene; None when the item has no scene
    (rows of a CSV know one box, not the others). `clean_logp`: [vocab] log-probabilities of the
    first answer token on the original image."""
    scene = item.scene
    if scene is None:
        return None
    asked = [i for i, o in enumerate(scene.objects) if tuple(float(v) for v in o.box) == item.box]
    if len(asked) != 1:
        raise ValueError(f"question {item.id}: its box matches {len(asked)} objects of the scene")
    p = clean_logp.exp()
    kl = []
    for i in range(len(scene.objects)):
        example = replace(answer.prompt, images=[scene.without(i)])
        logp = clean_run(scope, scope.prepare(example, with_answers=False), answer.ids[:1]).clean_logp[0]
        kl.append(float((p * (clean_logp - logp)).sum().clamp_min(0)))
    return Reliance(kl, int(np.argmax(kl)), asked[0])
