"""vlmscope: look inside Qwen vision-language models.

    import vlmscope
    scope = vlmscope.load("Qwen/Qwen2.5-VL-3B-Instruct")
    trace = scope.forward(vlmscope.Example("What colour is the circle?", images=["img.png"]),
                          capture=["vision.merger", "llm.layers"], layers="halp", tokens="vision_last")

Heavy imports (torch, transformers) happen on first use, not at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"
# public name -> module that defines it; imported on first use
_LAZY = {
    "load": "scope",
    "Scope": "scope",
    "Example": "inputs",
    "CapturePlan": "capture.plan",
    "Edit": "capture.edits",
    "Trace": "capture.trace",
    "TokenMap": "tokenmap",
    "VlmscopeError": "errors",
    "Answer": "methods.answer",
    "TokenMaps": "methods.token_maps",
    "explain": "methods.registry",
    "map_method": "methods.registry",
    "MAP_METHODS": "methods.registry",
    "mask_impact": "methods.masking",
    "MaskingOptions": "methods.masking",
    "MapMethod": "methods.base",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
