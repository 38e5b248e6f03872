"""Tiny random Qwen-VL models of every family, built offline from their config classes.

They are real transformers models (same classes, same processors, same chat template shape as
the released checkpoints), only small: the test suite, the benchmarks and the shapes model all
start here, and nothing is downloaded. Each family's adapter states its own tiny config and
processor (from the pieces in `tiny_parts`); this builder finds the family in the registry.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .registry import adapter_class
from .tiny_parts import CHAT_TEMPLATE, SPECIAL_TOKENS

DEFAULT_CORPUS = (
    "system user assistant You are a helpful assistant. Describe the image. What is in the picture? "
    "What colour is the circle? What shape is red? Is there a blue square? How many shapes are there? "
    "red green blue yellow purple orange white black circle square triangle left right top bottom "
    "yes no one two three four zero the a an of is are in on at this that picture image"
)


def build_tokenizer(corpus: str = DEFAULT_CORPUS, vocab_size: int = 512):
    """A byte-level BPE tokenizer (like Qwen's) that carries the Qwen special tokens, wrapped in
    the Qwen2 tokenizer class the Qwen-VL processors expect."""
    from transformers import Qwen2TokenizerFast  # type: ignore[attr-defined]  # a lazy alias mypy cannot see

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


def image_size_limits(patch: int, min_pixels: int | None = None, max_pixels: int | None = None) -> dict:
    """Processor size bounds for small test images: at least one merge unit, at most 16x16 of them."""
    factor = patch * 2
    return {"shortest_edge": min_pixels or factor * factor, "longest_edge": max_pixels or (factor * 16) ** 2}


def tiny_config(family: str, tokenizer, **sizes):
    """Config of a small random model of `family` (sizes: text_layers, vision_depth, hidden, heads,
    kv_heads, vision_hidden, vision_heads)."""
    return adapter_class(family).tiny_config(tokenizer, **sizes)


def build_processor(family: str, tokenizer, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """The family's own processor class around `tokenizer`, limited to small images."""
    cls = adapter_class(family)
    return cls.tiny_processor(tokenizer, image_size_limits(cls.tiny_patch, min_pixels, max_pixels))


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    tokenizer=None,
    overrides: dict | None = None,
    device: str = "cpu",
    **config_kw,
) -> Path:
    """Build a random `family` model + processor and `save_pretrained` both to `out_dir`.

    `overrides` sets fields of the sub-configs ({"text_config": {...}, "vision_config": {...}}),
    e.g. a released checkpoint's shapes for a benchmark; on a CUDA `device` the model is built
    there in bfloat16 (a 7B model initialises in seconds) and the GPU's cache is freed after."""
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = tokenizer or build_tokenizer()
    config = tiny_config(family, tokenizer, **config_kw)
    for part, fields in (overrides or {}).items():
        for key, value in fields.items():
            setattr(getattr(config, part), key, value)
    torch.manual_seed(seed)
    cuda = device.startswith("cuda")
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    build_processor(family, tokenizer).save_pretrained(out)
    del model
    if cuda:
        torch.cuda.empty_cache()  # whoever loads it next needs the GPU's memory
    return out
