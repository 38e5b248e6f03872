"""The main job's report: one generate, then every map method on the same answer, in one HTML file."""

from __future__ import annotations

import json
from pathlib import Path

from .inputs import Example
from .methods.masking import masking_maps

# methods beyond the attention maps: name -> function(scope, example, first_result) -> AttentionMaps-like
EXTRA_METHODS: dict = {"masking": masking_maps}


def run_report(scope, images, prompt: str, out_dir, methods=("raw", "rollout", "gradient", "masking"),
               max_new_tokens: int = 16) -> tuple[str, Path]:
    """Generate once (raw maps come with it), explain the same answer with the other methods,
    and write ``report.html`` + ``answer.json`` + ``token_map.json`` under `out_dir`."""
    from .methods.attention_maps import explain
    from .viz.render import html_report, token_overlays

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = explain(scope, Example(prompt, images=images), method="raw", max_new_tokens=max_new_tokens)
    forced = Example(prompt, images=images, answer=None)
    results = {"raw": first} if "raw" in methods else {}
    for m in methods:
        if m in results:
            continue
        if m in EXTRA_METHODS:
            results[m] = EXTRA_METHODS[m](scope, forced, first)
        else:
            results[m] = _explain_same_answer(scope, forced, first, m)
    overlays = {m: [token_overlays(r, k) for k in range(len(r.images))] for m, r in results.items()}
    notes = {"model": scope.source, "tokens": f"{len(first.token_ids)} generated",
             "methods": "raw = attention of each token's predicting row (mean over layers and heads); "
                        "rollout = attention rollout with residual; gradient = gradient-weighted relevancy; "
                        "masking = drop in the token's log-probability when each vision token is knocked out"}
    page = html_report(f"vlmscope: {prompt}", first.answer, first.token_map.summary(), overlays, first.tokens, notes)
    (out / "report.html").write_text(page)
    (out / "answer.json").write_text(json.dumps({"prompt": prompt, "answer": first.answer, "tokens": first.tokens}))
    (out / "token_map.json").write_text(json.dumps(first.token_map.to_dict()))
    return first.answer, out / "report.html"


def _explain_same_answer(scope, example: Example, first, method: str):
    """Explain exactly the tokens the model generated (ids, not re-tokenised text)."""
    from .methods.attention_maps import explain_ids

    return explain_ids(scope, example, first.token_map, first.token_ids, method)
