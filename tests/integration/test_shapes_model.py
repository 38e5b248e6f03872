"""The bundled shapes model: loads offline, answers held-out questions at its recorded accuracy,
and its answers depend on the object asked about."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vlmscope.data import shapes

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "src" / "vlmscope" / "assets" / "shapes-model"
EXAMPLES_DIR = ROOT / "src" / "vlmscope" / "assets" / "examples"


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("evaluate_shapes", ROOT / "scripts" / "evaluate_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_shapes"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate():
    return _evaluate_module()


@pytest.fixture(scope="module")
def loaded(evaluate):
    return evaluate.load(MODEL_DIR)


@pytest.fixture(scope="module")
def metrics():
    return json.loads((MODEL_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sample(evaluate):
    return shapes.make_dataset(evaluate.SAMPLE_N, seed=evaluate.SAMPLE_SEED)


def test_asset_is_small_and_safetensors_only():
    files = [p for p in MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 1024 * 1024
    names = {p.name for p in files}
    assert {"config.json", "model.safetensors", "MODEL_CARD.md", "metrics.json"} <= names
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in files)


def test_loads_offline_with_transformers(monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForImageTextToText.from_pretrained(MODEL_DIR, local_files_only=True)
    processor = AutoProcessor.from_pretrained(MODEL_DIR, local_files_only=True)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    side = shapes.IMAGE_SIZE
    enc = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>x"],
        images=[shapes.generate_scene(0).image],
        return_tensors="pt",
    )
    assert enc["image_grid_thw"].tolist() == [[1, side // 16, side // 16]]


def test_vlmscope_load_default_agrees_with_transformers(monkeypatch, evaluate, loaded, sample):
    import vlmscope

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scope = vlmscope.load(device="cpu")
    assert type(scope.model).__name__ == "Qwen3VLForConditionalGeneration"
    records = sample[:5]
    trace = scope.generate([vlmscope.Example(r.question, images=[r.image]) for r in records], max_new_tokens=3)
    direct = evaluate.predict(*loaded, [r.image for r in records], [r.question for r in records])
    assert [t.strip() for t in trace.generated_text] == direct


def test_sample_accuracy_matches_recorded(evaluate, loaded, metrics, sample):
    acc = evaluate.accuracy(*loaded, sample)
    recorded = metrics["test_sample"]
    assert abs(acc["all"] - recorded["all"]) <= 0.02
    assert acc["colour_of_shape"] >= 0.9 and acc["shape_of_colour"] >= 0.9


def test_answers_depend_on_the_asked_object(evaluate, loaded, sample):
    result = evaluate.occlusion(*loaded, sample, seed=0)
    assert result["n"] >= 25
    # Hiding the object is a coin flip or worse for the answer; hiding background is nearly free.
    assert result["object_occluded_changed"] >= 0.5
    assert result["background_occluded_changed"] <= 0.1
    acc = result["accuracy"]
    assert acc["intact"] - acc["object_occluded"] >= 0.4
    assert acc["intact"] - acc["background_occluded"] <= 0.1


def test_demo_examples_are_answered_correctly(evaluate, loaded):
    from PIL import Image

    metas = sorted(EXAMPLES_DIR.glob("*.json"))
    assert len(metas) >= 2
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        image = Image.open(EXAMPLES_DIR / meta["image"]).convert("RGB")
        assert evaluate.predict(*loaded, [image], [meta["question"]]) == [meta["answer"]]
