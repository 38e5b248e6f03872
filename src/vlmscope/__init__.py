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


def __getattr__(name):
    if name == "load":
        from .models.loading import load
        return load
    if name == "Example":
        from .inputs import Example
        return Example
    if name == "CapturePlan":
        from .capture.plan import CapturePlan
        return CapturePlan
    if name == "Scope":
        from .scope import Scope
        return Scope
    if name == "Trace":
        from .capture.trace import Trace
        return Trace
    if name == "TokenMap":
        from .tokenmap import TokenMap
        return TokenMap
    if name == "VlmscopeError":
        from .errors import VlmscopeError
        return VlmscopeError
    raise AttributeError(name)
