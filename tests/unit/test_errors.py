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


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("", "empty layer spec"),
        ("x", "bad layer spec"),
        ("3-9", "out of range"),
        ("n/0", r"bad layer spec 'n/0': fraction 'n/0'"),
        ("3:1", "layer spec '3:1' selects no layers"),
        ("2-1", "layer spec '2-1' selects no layers"),
        ("-1:-3", "layer spec '-1:-3' selects no layers"),
        ("0,5n/4", r"bad layer spec '0,5n/4': fraction '5n/4'"),
        ("4n/4", r"layer 4 out of range in '4n/4'"),
        ("99", r"layer 99 out of range in '99'"),
        ("n/2:n/0", "fraction 'n/0'"),
    ],
)
def test_bad_layer_specs(spec, msg):
    with pytest.raises(VlmscopeError, match=msg):
        parse_layers(spec, 4)


@pytest.mark.parametrize("n", [3, 4, 28, 36])
def test_fractions_inside_slices_and_ranges(n):
    layers, half, quarter, three = range(n), n // 2, n // 4, (3 * n) // 4  # k n/d is floor(k * n / d)
    assert parse_layers("n/2:", n) == [i for i in layers if i >= half]
    assert parse_layers(":n/2", n) == [i for i in layers if i < half]
    assert parse_layers("n/4:3n/4", n) == [i for i in layers if quarter <= i < three]
    assert parse_layers("n/4-3n/4", n) == [i for i in layers if quarter <= i <= three]
    assert parse_layers(":4n/4", n) == list(layers)  # a slice's end may be n itself
    with pytest.raises(VlmscopeError, match="out of range"):
        parse_layers("n/2-4n/4", n)  # an inclusive range's end may not


def test_fraction_slices_where_specs_are_taken(scopes):
    from vlmscope import CapturePlan

    adapter = scopes["qwen2_vl"].adapter
    n = adapter.num_layers
    keys = [r.key for r in CapturePlan.of("llm.layers", layers="n/2:").resolve(adapter)]
    assert keys == [f"llm.layers.{i}" for i in range(n) if i >= n // 2]
    with pytest.raises(VlmscopeError, match="layer spec '2:1' selects no layers"):
        CapturePlan.of("llm.layers", layers="2:1").resolve(adapter)


def test_layer_spec_forms():
    assert parse_layers("halp", 28) == [0, 7, 14, 21, 27]
    assert parse_layers("0,8,-1", 28) == [0, 8, 27]
    assert parse_layers("2-4", 28) == [2, 3, 4]
    assert parse_layers("-3:", 28) == [25, 26, 27]
    assert parse_layers("n/2,3n/4", 28) == [14, 21]
    assert parse_layers("n/2:", 28) == list(range(14, 28))
    with pytest.raises(VlmscopeError, match="unknown token selection 'pixels'"):
        parse_selection("pixels")


def test_unknown_model_type(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=32
    ).save_pretrained(tmp_path)
    with pytest.raises(VlmscopeError, match=r"unsupported model type 'llama'.*Qwen2-VL.*Qwen2.5-VL.*Qwen3-VL"):
        vlmscope.load(tmp_path, device="cpu")


def test_missing_model_dir(tmp_path):
    with pytest.raises(VlmscopeError, match="model directory not found"):
        vlmscope.load(str(tmp_path / "nope"), device="cpu")
