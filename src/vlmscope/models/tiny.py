"""Tiny random Qwen-VL models of every family, built offline from their config classes.

They are real transformers models (same classes, same processors, same chat template shape as
the released checkpoints), only small: the test suite, the benchmarks and the shapes model all
start here, and nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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

DEFAULT_CORPUS = (
    "system user assistant You are a helpful assistant. Describe the image. What is in the picture? "
    "What colour is the circle? What shape is red? Is there a blue square? How many shapes are there? "
    "red green blue yellow purple orange white black circle square triangle left right top bottom "
    "yes no one two three four zero the a an of is are in on at this that picture image"
)


def build_tokenizer(corpus: str = DEFAULT_CORPUS, vocab_size: int = 512):
    """A byte-level BPE tokenizer (like Qwen's) that carries the Qwen special tokens, wrapped in
    the Qwen2 tokenizer class the Qwen-VL processors expect."""
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([corpus] * 4, trainer=trainer)
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.padding_side = "left"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _rope(head_dim: int, interleaved: bool = False) -> dict:
    """mRoPE sections (temporal, height, width) summing to half the head dim. Passed as
    `rope_scaling`, which transformers 4.5x reads and 5.x converts to `rope_parameters`."""
    half = head_dim // 2
    t = half - 2 * (half // 3)
    section = [t, half // 3, half // 3]
    rope = {"rope_type": "default", "mrope_section": section}
    if interleaved:
        rope["mrope_interleaved"] = True
    return rope


def tiny_config(family: str, tokenizer, *, text_layers: int = 3, vision_depth: int = 2,
                hidden: int = 64, heads: int = 4, kv_heads: int = 2, vision_hidden: int = 32):
    """Config of a small random model of `family` whose token ids match `tokenizer`."""
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
    ]}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    head_dim = hidden // heads
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig
        vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=hidden, num_heads=2,
                      mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config={**text, "rope_scaling": _rope(head_dim)},
                             vision_config=vision, **ids)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig
        # window 56 px = 2x2 merged tokens; the last block uses full attention.
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                      num_heads=2, out_hidden_size=hidden, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=56, fullatt_block_indexes=[vision_depth - 1])
        return Qwen2_5_VLConfig(text_config={**text, "rope_scaling": _rope(head_dim)},
                                vision_config=vision, **ids)
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                      num_heads=2, out_hidden_size=hidden, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=list(range(min(2, vision_depth))))
        text3 = {**text, "head_dim": head_dim, "rope_scaling": _rope(head_dim, interleaved=True)}
        return Qwen3VLConfig(text_config=text3, vision_config=vision, **ids)
    from .registry import unsupported
    raise unsupported(family)


def build_processor(family: str, tokenizer, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """The family's own processor class around `tokenizer`, limited to small images."""
    from transformers import Qwen2VLImageProcessor

    patch = 16 if family == "qwen3_vl" else 14
    factor = patch * 2
    size = {"shortest_edge": min_pixels or factor * factor, "longest_edge": max_pixels or (factor * 16) ** 2}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor
        video = Qwen3VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
        return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=video, chat_template=CHAT_TEMPLATE)
    from transformers import Qwen2VLVideoProcessor
    video = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor as Processor
    else:
        from transformers import Qwen2VLProcessor as Processor
    return Processor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video,
                     chat_template=CHAT_TEMPLATE)


def build_tiny_model(family: str, out_dir: str | Path, *, seed: int = 0, tokenizer=None, **config_kw) -> Path:
    """Build a random `family` model + processor and `save_pretrained` both to `out_dir`."""
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = tokenizer or build_tokenizer()
    config = tiny_config(family, tokenizer, **config_kw)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    build_processor(family, tokenizer).save_pretrained(out)
    return out
