"""What a family's adapter builds its tiny model from: the Qwen special tokens and chat
template, and the config pieces every family shares (mRoPE sections, vision token ids, a small
decoder). It sits below the adapters; the builder that uses the registry (`tiny.py`) sits above.
"""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen2-VL chat template, reduced to what a small model needs: system turn, user turn with
# images/videos in place, assistant turn. Same markup as the released checkpoints.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def mrope(head_dim: int, interleaved: bool = False) -> dict:
    """mRoPE sections (temporal, height, width) summing to half the head dim, as `rope_scaling`."""
    half = head_dim // 2
    t = half - 2 * (half // 3)
    rope: dict[str, Any] = {"rope_type": "default", "mrope_section": [t, half // 3, half // 3]}
    if interleaved:
        rope["mrope_interleaved"] = True
    return rope


def token_ids(tokenizer) -> dict[str, Any]:
    """The vision token ids a config needs, read from `tokenizer`."""
    return {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }


def text_config(tokenizer, *, text_layers: int = 3, hidden: int = 64, heads: int = 4, kv_heads: int = 2) -> dict:
    """Keyword arguments of a small decoder whose special ids match `tokenizer`."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
