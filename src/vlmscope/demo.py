"""`make demo`: the main job on the bundled model, end to end, printing where the output went."""

from __future__ import annotations

from pathlib import Path


def _demo_model(out: Path) -> str:
    from .assets import bundled_model_dir

    path = bundled_model_dir()
    if path is not None:
        return str(path)
    from .models.tiny import build_tiny_model

    print("bundled model not installed: building a tiny random Qwen3-VL for the demo")
    return str(build_tiny_model("qwen3_vl", out / "tiny-model"))


def _demo_image():
    from .assets import HERE

    found = sorted((HERE / "examples").glob("*.png")) if (HERE / "examples").is_dir() else []
    if found:
        return found[0]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))


def run_demo(args) -> int:
    import json

    from .inputs import Example
    from .models.loading import load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scope = load(_demo_model(out), device="auto")
    info = scope.describe()
    print(f"model: {info['name']} {info['class']}, {info['llm']['layers']} LLM layers, "
          f"{info['vision']['blocks']} vision blocks")
    ex = Example("What colour is the circle?", images=[_demo_image()])
    trace = scope.generate(ex, ["vision.merger", "llm.layers", "llm.layers.attn"], layers="halp", max_new_tokens=8)
    tm = trace.token_maps[0]
    print(f"answer: {trace.generated_text[0]!r}")
    print(f"token map: {tm.length} tokens, image tokens {tm.visuals[0].segments}, grid {tm.visuals[0].merged_thw}, "
          f"query position {tm.query}")
    for site, tensors in trace.captures.items():
        print(f"  {site:24s} {tuple(tensors[0].shape)}")
    (out / "token_map.json").write_text(json.dumps(tm.summary(), indent=2))
    print(f"wrote {out.resolve() / 'token_map.json'}")
    return 0
