"""Limits of a model that an input can exceed without transformers noticing.

A prompt longer than the context runs with no error: rotary positions past
``max_position_embeddings`` were never trained, so every feature of such a row is silently off.
Callers check here and record, warn or refuse, with both lengths in the message.
"""

from __future__ import annotations

ANSWER_TOKENS = 32  # the answer budget of every command, the app and the API unless told otherwise


def context_length(config) -> int | None:
    """The text model's context in tokens (``text_config.max_position_embeddings``), if the config says."""
    text = getattr(config, "text_config", None) or config
    n = getattr(text, "max_position_embeddings", None)
    return int(n) if n else None


def check_context_length(config, length: int, new_tokens: int = 0) -> str | None:
    """None if `length` prompt tokens plus `new_tokens` to generate fit the model's context,
    else a one-line message naming both lengths."""
    limit = context_length(config)
    total = length + new_tokens
    if limit is None or total <= limit:
        return None
    what = f"{length} tokens" + (f" + {new_tokens} to generate = {total}" if new_tokens else "")
    return (
        f"the prompt is {what}, longer than the model's context of {limit} tokens "
        f"(text_config.max_position_embeddings); shorten the prompt or lower max_pixels"
    )
