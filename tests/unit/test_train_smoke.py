"""The shapes training script still runs end to end (a few steps of a very small model)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_shapes.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_shapes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_shapes"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_train_few_steps_saves_loadable_model(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    train = _script()
    out = tmp_path / "model"
    metrics = train.main(
        [
            "--out",
            str(out),
            "--steps",
            "3",
            "--images-per-step",
            "2",
            "--questions-per-image",
            "2",
            "--hidden",
            "32",
            "--text-layers",
            "1",
            "--vision-hidden",
            "32",
            "--vision-depth",
            "1",
            "--eval-every",
            "2",
            "--eval-n",
            "5",
            "--warmup",
            "1",
        ]
    )
    assert metrics["training"]["steps_done"] == 3
    assert [p["step"] for p in metrics["training"]["loss_curve"]] == [2, 3]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert model.config.vision_config.num_position_embeddings == 144
    assert processor.image_processor.size["longest_edge"] == 192 * 192


def test_every_answer_is_one_token():
    from vlmscope.data import shapes

    tok = _script().shapes_tokenizer()
    assert all(len(tok(a, add_special_tokens=False)["input_ids"]) == 1 for a in shapes.ANSWERS)
