"""vlmscope: look inside Qwen vision-language models.

    import vlmscope
    scope = vlmscope.load("Qwen/Qwen2.5-VL-3B-Instruct")
    trace = scope.forward(vlmscope.Example("What colour is the circle?", images=["img.png"]),
                          capture=["vision.merger", "llm.layers"], layers="halp", tokens="vision_last")

Heavy imports (torch, transformers) happen on first use, not at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "Example", "CapturePlan", "Scope", "Trace", "TokenMap", "VlmscopeError"]


# public name -> module that defines it; imported on first use
_LAZY = {"load": "models.loading", "Example": "inputs", "CapturePlan": "capture.plan", "Scope": "scope",
         "Trace": "capture.trace", "TokenMap": "tokenmap", "VlmscopeError": "errors"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
