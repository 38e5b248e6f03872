"""The main job's report: one generate, then every map method on the same answer, in one HTML file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .inputs import Example
from .methods.answer import Answer
from .methods.registry import MAP_METHODS, check_method_names, map_method

if TYPE_CHECKING:
    from .scope import Scope


def run_report(
    scope: Scope,
    images,
    prompt: str,
    out_dir,
    methods: Sequence[str] = tuple(MAP_METHODS),
    max_new_tokens: int = 16,
    answer: str | None = None,
    lens: str | None = "logit",
) -> tuple[str, Path]:
    """Generate once (capturing what the methods want on the way), explain the same answer with
    every method, add the `lens` view of the vision tokens (None: no lens), and write
    ``report.html`` + ``answer.json`` + ``token_map.json`` under `out_dir`."""
    from .viz.render import html_report, token_overlays

    methods = check_method_names(methods)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    example = Example(prompt, images=images, answer=answer)
    instances = {m: map_method(m) for m in methods}
    raw = instances.get("raw")
    resolved = Answer.resolve(scope, example, max_new_tokens, capture=raw.capture_plan(scope) if raw else None)
    from .progress import progress

    results = {
        m: inst.attribute(scope, example, resolved)
        for m, inst in progress(instances.items(), total=len(instances), desc="maps", unit="method")
    }
    sections = []
    if lens is not None:
        from .methods.lens.method import LENS_METHODS
        from .viz.lens_page import render_page

        view = LENS_METHODS[lens]().attribute(scope, example, resolved)
        sections.append((f"{lens} lens of the vision tokens: {LENS_METHODS[lens].summary}", render_page(view)))
    overlays = {m: [token_overlays(r, k) for k in range(len(r.images))] for m, r in results.items()}
    notes = {
        "model": scope.source,
        "tokens": f"{len(resolved.ids)} {'generated' if resolved.generated else 'given'}",
        "methods": "; ".join(f"{m} = {MAP_METHODS[m].summary}" for m in methods),
    }
    page = html_report(
        f"vlmscope: {prompt}", resolved.text, resolved.token_map.summary(), overlays, resolved.tokens, notes, sections
    )
    (out / "report.html").write_text(page)
    (out / "answer.json").write_text(json.dumps({"prompt": prompt, "answer": resolved.text, "tokens": resolved.tokens}))
    (out / "token_map.json").write_text(json.dumps(resolved.token_map.to_dict()))
    return resolved.text, out / "report.html"
