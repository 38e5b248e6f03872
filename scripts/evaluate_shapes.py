"""Score the shapes model on held-out scenes: accuracy per question type and an occlusion check.

    python scripts/evaluate_shapes.py --model src/vlmscope/assets/shapes-model

Answers come from plain transformers greedy decoding, as a user would get them. The occlusion
check asks whether answers depend on the asked object: hiding its box should change the answer
far more often than hiding an equal-sized patch of background.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vlmscope.data import shapes

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src/vlmscope/assets/shapes-model"
EVAL_SEED = 1000  # scenes from this seed are never used in training
SAMPLE_SEED = 2000  # the small fixed set the test suite re-scores
SAMPLE_N = 50


def load(model_dir: str | Path = DEFAULT_MODEL):
    """Model and processor through the plain transformers auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), AutoProcessor.from_pretrained(model_dir)


@torch.inference_mode()
def predict(model, processor, images, questions: list[str], batch_size: int = 50) -> list[str]:
    """Greedy answers, one per (image, question)."""
    processor.tokenizer.padding_side = "left"
    answers: list[str] = []
    for i in range(0, len(questions), batch_size):
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            tokenize=False, add_generation_prompt=True) for q in questions[i:i + batch_size]]
        enc = processor(text=texts, images=list(images[i:i + batch_size]), return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=3, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        answers += [a.strip() for a in processor.batch_decode(new, skip_special_tokens=True)]
    return answers


def accuracy(model, processor, records: list[shapes.Record]) -> dict:
    """Exact-match accuracy per question type, plus `all` and the number of questions per type."""
    preds = predict(model, processor, [r.image for r in records], [r.question for r in records])
    by_type: dict[str, list[bool]] = {}
    for r, p in zip(records, preds):
        by_type.setdefault(r.question_type, []).append(p == r.answer)
    result = {t: round(float(np.mean(h)), 4) for t, h in sorted(by_type.items())}
    result["all"] = round(float(np.mean([h for v in by_type.values() for h in v])), 4)
    result["n"] = {t: len(h) for t, h in sorted(by_type.items())}
    return result


def occlusion(model, processor, records: list[shapes.Record], seed: int = 0) -> dict:
    """How often hiding the asked object, or an equal-sized background patch, changes the answer."""
    cases = []
    for r in records:
        if r.box is None:
            continue
        bg = shapes.background_box(r.scene, r.box, np.random.default_rng([seed, r.question_id]))
        if bg is not None:
            cases.append((r, bg))
    questions = [r.question for r, _ in cases]
    base = predict(model, processor, [r.image for r, _ in cases], questions)
    hidden = predict(model, processor, [shapes.occlude(r.scene, r.box) for r, _ in cases], questions)
    moved = predict(model, processor, [shapes.occlude(r.scene, bg) for r, bg in cases], questions)
    kinds = [r.question_type for r, _ in cases]

    truth = [r.answer for r, _ in cases]

    def rates(keep) -> dict:
        idx = [i for i, k in enumerate(kinds) if keep(k)]
        agree = lambda xs, ys: round(float(np.mean([xs[i] == ys[i] for i in idx])), 4)  # noqa: E731
        return {"n": len(idx),
                "object_occluded_changed": round(1 - agree(base, hidden), 4),
                "background_occluded_changed": round(1 - agree(base, moved), 4),
                "accuracy": {"intact": agree(base, truth), "object_occluded": agree(hidden, truth),
                             "background_occluded": agree(moved, truth)}}

    return {**rates(lambda k: True), "by_type": {t: rates(lambda k, t=t: k == t) for t in sorted(set(kinds))}}


DEMO_TYPES = ("colour_of_shape", "shape_of_colour", "position")


def write_examples(model, processor, out_dir: str | Path, seed: int = 3000) -> list[Path]:
    """Save one busy held-out scene per demo question type that the model answers correctly."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in shapes.make_dataset(100, seed=seed) if len(r.scene.objects) >= 3]
    preds = predict(model, processor, [r.image for r in records], [r.question for r in records])
    written = []
    for i, qtype in enumerate(DEMO_TYPES):
        r = next(r for r, p in zip(records, preds) if r.question_type == qtype and p == r.answer)
        stem = "shapes_demo" if i == 0 else f"shapes_demo_{i + 1}"
        r.image.save(out / f"{stem}.png")
        meta = {"image": f"{stem}.png", "question": r.question, "answer": r.answer,
                "question_type": r.question_type, "box": list(r.box),
                "objects": [{"shape": o.shape, "colour": o.colour, "box": list(o.box)} for o in r.scene.objects]}
        (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
        written.append(out / f"{stem}.png")
    return written


def evaluate(model_dir: str | Path = DEFAULT_MODEL, n: int = 2000, occlusion_n: int = 1000) -> dict:
    """Held-out accuracy, the occlusion check and the test-suite sample's accuracy."""
    model, processor = load(model_dir)
    heldout = shapes.make_dataset(n, seed=EVAL_SEED)
    sample = shapes.make_dataset(SAMPLE_N, seed=SAMPLE_SEED)
    return {
        "heldout": {"seed": EVAL_SEED, **accuracy(model, processor, heldout)},
        "occlusion": {"seed": EVAL_SEED, **occlusion(model, processor, heldout[:occlusion_n])},
        "test_sample": {"seed": SAMPLE_SEED, **accuracy(model, processor, sample)},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--n", type=int, default=2000, help="held-out questions")
    parser.add_argument("--occlusion-n", type=int, default=1000, help="records tried for the occlusion check")
    parser.add_argument("--examples", help="also write the demo images and their questions here")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.n, args.occlusion_n)
    if args.examples:
        write_examples(*load(args.model), args.examples)
    path = Path(args.model) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.update(result)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
