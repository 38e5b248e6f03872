"""The main job's report: one generate, then every map method on the same answer, in one HTML file.

The page is `viz/templates/run_report.html.j2`, built from the shared macros (token x method
grid, detail view, provenance, token map), so `compare` and the app show the same parts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VlmscopeError
from .inputs import Example
from .limits import ANSWER_TOKENS
from .methods.answer import Answer
from .methods.registry import MAP_METHODS, check_method_names, map_method

if TYPE_CHECKING:
    from .scope import Scope


def prompt_text_labels(scope: Scope, token_map) -> list[str]:
    """The prompt's text tokens as strings, in the order of a map's ``text_maps`` columns."""
    tok = scope.processor.tokenizer
    return [tok.decode([token_map.input_ids[p]]) for p in sorted(token_map.text_positions())]


def _instance(name: str, text: bool, heads="all"):
    """The method, keeping the prompt's text columns when asked and the method can, and reading
    only `heads` when the method reads heads."""
    options = {"heads": heads} if heads != "all" and MAP_METHODS[name].uses_heads else {}
    if text:
        try:
            return map_method(name, keep_text=True, **options)
        except VlmscopeError:  # a method that maps vision tokens only
            pass
    return map_method(name, **options)


def run_report(
    scope: Scope,
    images,
    prompt: str,
    out_dir,
    methods: Sequence[str] = tuple(MAP_METHODS),
    max_new_tokens: int = ANSWER_TOKENS,
    answer: str | None = None,
    lens: str | None = "logit",
    text: bool = False,
    heads="all",
) -> tuple[str, Path]:
    """Generate once (capturing what the methods want on the way), explain the same answer with
    every method (and, with `text`, the weight of the prompt's text tokens; with `heads`, a head
    spec, layer.head pairs or a heads.json, for the methods that read heads), add the `lens` view
    of the vision tokens (None: no lens), and write ``report.html`` + ``answer.json`` +
    ``token_map.json`` under `out_dir`."""
    from .viz.page import maps_context, render, text_importance_context

    methods = check_method_names(methods)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    example = Example(prompt, images=images, answer=answer)
    instances = {m: _instance(m, text, heads) for m in methods}
    raw = instances.get("raw")
    resolved = Answer.resolve(scope, example, max_new_tokens, capture=raw.capture_plan(scope) if raw else None)
    from .progress import progress

    results = {}
    with progress(total=len(instances), desc="maps", unit="method") as bar:
        for m, inst in instances.items():
            bar.set_postfix_str(m)  # the method being computed, beside the count of those done
            results[m] = inst.attribute(scope, example, resolved)
            bar.update(1)
    sections = []
    if lens is not None:
        from .methods.lens.method import LENS_METHODS
        from .viz.lens_page import render_page

        view = LENS_METHODS[lens]().attribute(scope, example, resolved)
        sections.append((f"{lens} lens of the vision tokens: {LENS_METHODS[lens].summary}", render_page(view)))
    maps = maps_context(results, {m: MAP_METHODS[m].summary for m in methods})
    notes = {"tokens": f"{len(resolved.ids)} {'generated' if resolved.generated else 'given'}"}
    page = render(
        "run_report.html.j2",
        title=f"vlmscope: {prompt}",
        question=prompt,
        answer=resolved.text,
        generated=resolved.generated,
        provenance=scope.provenance.to_dict(),
        maps=maps,
        text_importance=text_importance_context(results, prompt_text_labels(scope, resolved.token_map)) if text else [],
        token_map=resolved.token_map.summary(),
        sections=sections,
        notes=notes,
    )
    (out / "report.html").write_text(page)
    (out / "answer.json").write_text(json.dumps({"prompt": prompt, "answer": resolved.text, "tokens": resolved.tokens}))
    (out / "token_map.json").write_text(json.dumps(resolved.token_map.to_dict()))
    return resolved.text, out / "report.html"
