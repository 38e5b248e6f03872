"""Driving the app's page: upload, prompt, generate, read the numbers behind the shown map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src/vlmscope/assets/examples/shapes_demo.png"
DEMO_2 = ROOT / "src/vlmscope/assets/examples/shapes_demo_2.png"
PROMPT = "What colour is the square?"


def hidden_json(page, elem_id: str) -> dict | None:
    value = page.locator(f"#{elem_id} textarea").input_value()
    return json.loads(value) if value else None


def wait_json(page, elem_id: str, predicate="v => v.length > 2") -> dict:
    """Wait until the hidden element's text satisfies the JS `predicate`, then parse it."""
    page.wait_for_function(
        f"() => {{ const t = document.querySelector('#{elem_id} textarea'); return t && ({predicate})(t.value); }}"
    )
    out = hidden_json(page, elem_id)
    assert out is not None
    return out


def status(page) -> str:
    return page.locator("#vs-status").inner_text().strip()


def wait_status(page, needle: str) -> str:
    page.wait_for_function("n => (document.querySelector('#vs-status')?.innerText || '').includes(n)", arg=needle)
    return status(page)


def upload(page, *paths, video=None) -> None:
    if paths:
        page.locator("#vs-images input[type=file]").set_input_files([str(p) for p in paths])
        page.wait_for_function(
            "n => document.querySelectorAll('#vs-images .file-name, #vs-images tr').length >= n", arg=len(paths)
        )
    if video is not None:
        page.locator("#vs-video input[type=file]").set_input_files(str(video))
        page.wait_for_function("() => document.querySelectorAll('#vs-video .file-name, #vs-video tr').length >= 1")


def generate(page, prompt: str) -> dict:
    """Type the prompt, click Generate, wait for the first token's map; return its values."""
    page.locator("#vs-prompt textarea").fill(prompt)
    page.locator("#vs-map-values textarea").evaluate("t => t.value = ''")
    page.locator("#vs-generate").click()
    values = wait_json(page, "vs-map-values")
    page.wait_for_selector("#vs-map img")
    return values


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def grid(values: dict, visual: int = 0) -> np.ndarray:
    v = values["visuals"][visual]
    return np.asarray(v["values"], dtype=np.float32)
