"""Loading goes through from_pretrained with safetensors and leaves the weights untouched."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

import vlmscope


def test_load_matches_plain_transformers(tiny_dirs, scopes, family):
    ref = AutoModelForImageTextToText.from_pretrained(tiny_dirs[family], dtype=torch.float32)
    scope = scopes[family]
    assert type(scope.model) is type(ref) and scope.adapter.family == family
    for (n1, p1), (n2, p2) in zip(ref.state_dict().items(), scope.model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert (tiny_dirs[family] / "model.safetensors").is_file()


def test_pixel_limits_and_default_kernel(tiny_dirs):
    scope = vlmscope.load(tiny_dirs["qwen2_vl"], device="cpu", max_pixels=56 * 56)
    img = __import__("conftest").random_image(200, 200, 0)
    tm = scope.prepare(vlmscope.Example("x", images=[img])).token_maps[0]
    assert tm.visuals[0].resized_size == (56, 56)
    assert scope.attn_base == "sdpa" and scope.model.config.vision_config._attn_implementation == "sdpa"


def test_older_module_layout_is_refused_clearly(scopes):
    """transformers < 4.52 kept the tower at model.visual and the decoder at model.model: vlmscope
    requires transformers 5 and says so instead of failing deep inside a hook."""
    from torch import nn

    from vlmscope import VlmscopeError
    from vlmscope.models.qwen2_vl import Qwen2VLAdapter

    new = scopes["qwen2_vl"].model

    class Old(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual, self.model, self.lm_head = new.model.visual, new.model.language_model, new.lm_head
            self.config = new.config

    with pytest.raises(VlmscopeError, match="transformers >= 5"):
        Qwen2VLAdapter(Old(), scopes["qwen2_vl"].processor)
