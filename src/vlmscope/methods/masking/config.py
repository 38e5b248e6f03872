"""Masking runs listed in a YAML file: images, prompts and settings, one output folder per run.

    model: path/or/hub-id          # optional (the command line's --model wins)
    out: masking-out               # optional (the command line's --out wins)
    defaults: {mode: vision, perturbation: knockout, max_new_tokens: 8}
    runs:
      - name: circle
        image: shapes.png          # or images: [a.png, b.png]; paths relative to this file
        prompt: What colour is the circle?
        mode: both                 # any option overrides the defaults for this run

A run that fails (a missing image, a bad setting) is recorded in summary.json with its one-line
error and the batch goes on. Two runs may not share a name: each owns its output folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from ...errors import VlmscopeError
from ...inputs import Example
from ...progress import progress
from .analysis import mask_impact
from .options import MaskingOptions, check_static

OPTION_KEYS = tuple(f.name for f in fields(MaskingOptions))
RUN_KEYS = ("name", "image", "images", "prompt", "answer", "system", *OPTION_KEYS)
TOP_KEYS = ("model", "out", "defaults", "runs")


def read_config(path: str | Path) -> dict:
    """Parse and check the file's structure; run-level problems are left to each run."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise VlmscopeError(f"config file not found: {str(path)!r}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise VlmscopeError(f"cannot parse config {str(path)!r}: {what}{where}") from None
    if not isinstance(config, dict):
        raise VlmscopeError(f"config {str(path)!r} must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(config) - set(TOP_KEYS))
    if unknown:
        raise VlmscopeError(f"unknown key {unknown[0]!r} in config {str(path)!r}; accepted: {', '.join(TOP_KEYS)}")
    runs, defaults = config.get("runs"), config.get("defaults") or {}
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise VlmscopeError(f"config {str(path)!r} needs 'runs': a list of mappings with an image and a prompt")
    if not isinstance(defaults, dict) or set(defaults) - set(OPTION_KEYS):
        bad = sorted(set(defaults) - set(OPTION_KEYS)) if isinstance(defaults, dict) else [repr(defaults)]
        raise VlmscopeError(
            f"bad 'defaults' entry {bad[0]!r} in config {str(path)!r}; accepted: {', '.join(OPTION_KEYS)}"
        )
    return {**config, "defaults": defaults, "root": path.resolve().parent}


def run_config(
    path: str | Path,
    load_scope: Callable,
    out: str | Path | None = None,
    overrides: dict | None = None,
    claim: Callable[[Path], Path] | None = None,
) -> tuple[list[dict], Path]:
    """Run every entry of the config: one record per run, written to summary.json, and that file.

    ``load_scope(model_or_None)`` gives the Scope; ``overrides`` (options set on the command line)
    replace the file's defaults; ``claim(out_dir)`` checks and prepares the output directory
    before the model loads (default: create it).
    """
    config = read_config(path)
    root = config["root"]
    model = config.get("model")
    if model is not None and (root / str(model)).exists():
        model = str(root / str(model))
    names = [str(run.get("name", f"run{i:03d}")) for i, run in enumerate(config["runs"])]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise VlmscopeError(
            f"run name {twice[0]!r} appears more than once in {str(path)!r}; each run writes its own folder"
        )
    out_dir = Path(out or root / str(config.get("out") or "masking-out"))
    if claim is not None:
        out_dir = claim(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults = {**config["defaults"], **(overrides or {})}
    checked = [
        _checked_inputs(run, i, name, root, defaults) for i, (run, name) in enumerate(zip(config["runs"], names))
    ]
    # a run whose inputs are wrong fails before the model loads; no valid run: no model at all
    scope = load_scope(model) if any(not isinstance(c, str) for c in checked) else None
    records = []
    runs = progress(list(zip(checked, names)), desc="mask runs", unit="run")
    for i, (inputs, name) in enumerate(runs):
        record = {"run": i, "name": name}
        try:
            if isinstance(inputs, str):
                raise VlmscopeError(inputs)
            assert scope is not None, "the model is loaded when a run has valid inputs"
            example, options = inputs
            result = mask_impact(scope, example, options)
            target = result.save(out_dir / name)
            record.update(
                status="ok",
                answer=result.answer_text,
                units=len(result.units),
                seconds=round(result.seconds, 3),
                dir=str(target),
            )
        except VlmscopeError as e:
            record.update(status="error", error=str(e))
        records.append(record)
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(records, indent=1))
    return records, summary


def _checked_inputs(run: dict, i: int, name: str, root: Path, defaults: dict) -> tuple[Example, MaskingOptions] | str:
    """A run's example and options, or the one-line error that keeps it from running."""
    try:
        example, options = _run_inputs(run, i, name, root, defaults)
        check_static(options)
        missing = [p for p in example.images if not Path(p).is_file()]
        if missing:
            raise VlmscopeError(f"image not found: {missing[0]!r}")
    except VlmscopeError as e:
        return str(e)
    return example, options


def _run_inputs(run: dict, i: int, name: str, root: Path, defaults: dict) -> tuple[Example, MaskingOptions]:
    unknown = sorted(set(run) - set(RUN_KEYS))
    if unknown:
        raise VlmscopeError(f"run {i}: unknown key {unknown[0]!r}; accepted: {', '.join(RUN_KEYS)}")
    if not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
        raise VlmscopeError(f"run {i}: bad name {name!r}; use letters, digits, '.', '-' and '_'")
    if not str(run.get("prompt") or "").strip():
        raise VlmscopeError(f"run {i} ({name}): no prompt")
    images = run.get("images", [run["image"]] if "image" in run else [])
    images = [images] if isinstance(images, str) else list(images)
    example = Example(
        str(run["prompt"]),
        images=[str(root / str(p)) for p in images],
        answer=run.get("answer"),
        system=run.get("system"),
    )
    return example, MaskingOptions(**{**defaults, **{k: v for k, v in run.items() if k in OPTION_KEYS}})
