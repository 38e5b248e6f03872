"""The vlmscope web app (Gradio): `build(scope_or_models) -> gr.Blocks`, `launch(blocks, host, port)`.

Needs ``pip install 'vlmscope[app]'``. Nothing here holds a model or state at import time: every
`build()` makes a new page over the models it is given, and each browser session keeps its own
uploads and answers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build", "launch", "Limits"]


def __getattr__(name: str) -> Any:
    if name in ("build", "launch"):
        from . import ui

        return getattr(ui, name)
    if name == "Limits":
        from .inputs import Limits

        return Limits
    raise AttributeError(name)
