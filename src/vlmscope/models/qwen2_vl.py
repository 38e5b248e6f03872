"""Qwen2-VL: vision tower of full-attention blocks, 2x2 patch merger, mRoPE decoder."""

from .adapter import Adapter


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    display_name = "Qwen2-VL"
    hf_class = "Qwen2VLForConditionalGeneration"
