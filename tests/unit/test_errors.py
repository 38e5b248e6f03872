"""Bad input gets one clear error naming the bad value and what is accepted."""

from __future__ import annotations

import pytest

import vlmscope
from vlmscope import Example, VlmscopeError
from vlmscope.specs import parse_layers, parse_selection


def test_unknown_site(scopes):
    with pytest.raises(VlmscopeError, match=r"unknown site 'llm.layer.3'.*llm.layers"):
        scopes["qwen2_vl"].forward(Example("hi"), ["llm.layer.3"])


def test_deepstack_site_only_on_qwen3(scopes):
    with pytest.raises(VlmscopeError, match="unknown site 'vision.deepstack.0'"):
        scopes["qwen2_5_vl"].forward(Example("hi"), ["vision.deepstack.0"])


def test_layer_out_of_range(scopes):
    with pytest.raises(VlmscopeError, match=r"layer 7 out of range.*3 layers \(0..2\)"):
        scopes["qwen2_vl"].forward(Example("hi"), ["llm.layers.7"])
    with pytest.raises(VlmscopeError, match="vision block 5 out of range"):
        scopes["qwen2_vl"].forward(Example("hi"), ["vision.blocks"], layers="5")


def test_empty_prompt_without_image():
    with pytest.raises(VlmscopeError, match="empty example"):
        Example("   ")


def test_unreadable_and_missing_images(scopes, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(VlmscopeError, match="cannot read image .*corrupt.png"):
        scopes["qwen2_vl"].prepare(Example("hi", images=[bad]))
    with pytest.raises(VlmscopeError, match="image not found: .*missing.jpg"):
        scopes["qwen2_vl"].prepare(Example("hi", images=[tmp_path / "missing.jpg"]))


def test_path_escaping_images_root(scopes, tmp_path):
    with pytest.raises(VlmscopeError, match="escapes the images directory"):
        scopes["qwen2_vl"].prepare(Example("hi", images=["../../etc/passwd"]), images_root=tmp_path)


def test_selection_needing_an_image(scopes):
    with pytest.raises(VlmscopeError, match="needs an image"):
        scopes["qwen2_vl"].forward(Example("hi"), ["llm.layers.0"], tokens="vision")


@pytest.mark.parametrize("spec,msg", [("", "empty layer spec"), ("x", "bad layer spec"), ("3-9", "out of range")])
def test_bad_layer_specs(spec, msg):
    with pytest.raises(VlmscopeError, match=msg):
        parse_layers(spec, 4)


def test_layer_spec_forms():
    assert parse_layers("halp", 28) == [0, 7, 14, 21, 27]
    assert parse_layers("0,8,-1", 28) == [0, 8, 27]
    assert parse_layers("2-4", 28) == [2, 3, 4]
    assert parse_layers("-3:", 28) == [25, 26, 27]
    assert parse_layers("n/2,3n/4", 28) == [14, 21]
    with pytest.raises(VlmscopeError, match="unknown token selection 'pixels'"):
        parse_selection("pixels")


def test_unknown_model_type(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=32).save_pretrained(tmp_path)
    with pytest.raises(VlmscopeError, match=r"unsupported model type 'llama'.*Qwen2-VL.*Qwen2.5-VL.*Qwen3-VL"):
        vlmscope.load(tmp_path, device="cpu")


def test_missing_model_dir(tmp_path):
    with pytest.raises(VlmscopeError, match="model directory not found"):
        vlmscope.load(str(tmp_path / "nope"), device="cpu")
