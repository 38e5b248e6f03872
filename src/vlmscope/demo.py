"""`make demo`: the main job (`vlmscope run`) on the bundled model and a shipped example image."""

from __future__ import annotations

import json
from pathlib import Path


def _demo_model(out: Path) -> str:
    from .assets import bundled_model_dir

    path = bundled_model_dir()
    if path is not None:
        return str(path)
    from .models.tiny import build_tiny_model

    print("bundled model not installed: building a tiny random Qwen3-VL for the demo")
    return str(build_tiny_model("qwen3_vl", out / "tiny-model"))


def _demo_example(out: Path) -> tuple[Path, str]:
    """The shipped example image and its question (a generated scene if none is shipped)."""
    from .assets import HERE

    examples = HERE / "examples"
    for meta in sorted(examples.glob("*.json")) if examples.is_dir() else []:
        info = json.loads(meta.read_text())
        image = examples / info.get("image", meta.with_suffix(".png").name)
        if image.is_file():
            return image, info["question"]
    from .data.shapes import make_dataset

    rec = make_dataset(1, seed=7)[0]
    path = out / "example.png"
    rec.image.save(path)
    return path, rec.question


def run_demo(args) -> int:
    from .report import run_report
    from .scope import load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scope = load(_demo_model(out), device="auto")
    image, question = _demo_example(out)
    print(f"model: {scope.describe()['name']} from {scope.source}")
    print(f"image: {image}\nquestion: {question}")
    answer, report = run_report(scope, [image], question, out)
    print(f"answer: {answer}")
    print(f"report: {report.resolve()}")
    return 0
