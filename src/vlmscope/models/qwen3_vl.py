"""Qwen3-VL: absolute + rotary vision positions, and deepstack: features of a few vision blocks
go through their own mergers and are added to the image positions after LLM layers 0..k-1."""

from .adapter import Adapter


class Qwen3VLAdapter(Adapter):
    family = "qwen3_vl"
    display_name = "Qwen3-VL"
    hf_class = "Qwen3VLForConditionalGeneration"

    @property
    def deepstack_visual_indexes(self) -> list[int]:
        return list(getattr(self.config.vision_config, "deepstack_visual_indexes", []) or [])
