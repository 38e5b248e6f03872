"""`vlmscope.load`: a hub id or a local directory in, a Scope out."""

from __future__ import annotations

from pathlib import Path

from ..errors import VlmscopeError
from .registry import adapter_class

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def default_model() -> str:
    """The bundled model organism when it is installed, else a hint to pass one."""
    from ..assets import bundled_model_dir

    path = bundled_model_dir()
    if path is None:
        raise VlmscopeError("no model given and the bundled shapes model is not installed; pass --model PATH_OR_HUB_ID")
    return str(path)


def resolve_device(device: str):
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise VlmscopeError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None


def resolve_dtype(dtype, device):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        # bf16 on GPUs that have it; fp32 on the CPU, where half precision is slow and lossy.
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise VlmscopeError(f"unknown dtype {dtype!r}; use auto, {', '.join(sorted(set(DTYPES)))}")
    return getattr(torch, DTYPES[dtype])


def check_weights(source: str) -> None:
    """A local checkpoint must carry safetensors: pickle weights (``*.bin``) can run code on load."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return  # a hub id: transformers is asked for safetensors only, and says so if there are none
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.glob("*.bin")) or sorted(p.name for p in path.iterdir())[:3]
        what = f" (found {', '.join(found)})" if found else " (the directory is empty)"
        raise VlmscopeError(
            f"no *.safetensors weights in {source!r}{what}: vlmscope loads safetensors only, because "
            "pickle weights can run arbitrary code; convert them with save_pretrained(safe_serialization=True)"
        )


def check_attention(name: str | None) -> None:
    """A known attention kernel, named before any weight loads."""
    if name is None:
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *sorted(k for k in ALL_ATTENTION_FUNCTIONS if not k.startswith("vlmscope_"))]
    if name not in known:
        raise VlmscopeError(f"unknown attention implementation {name!r}; choose from {', '.join(known)}")


def load_model(
    model: str | Path | None = None,
    device: str = "auto",
    dtype="auto",
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """(HF model, processor, adapter, source) for a hub id or a directory; see `vlmscope.load`."""
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    source = str(model) if model is not None else default_model()
    # a local path; not a hub id, whose name may hold dots (Qwen/Qwen2.5-VL-3B-Instruct)
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().exists():
        raise VlmscopeError(f"model directory not found: {source!r}")
    transformers.utils.logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise VlmscopeError(f"cannot load model {source!r}: {first}") from None
    cls = adapter_class(getattr(config, "model_type", ""))
    check_weights(source)
    check_attention(attn_implementation)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kw = {"dtype": torch_dtype, "use_safetensors": True, "trust_remote_code": trust_remote_code, "revision": revision}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if device_map is not None:
        kw["device_map"] = device_map
    try:
        hf_model = AutoModelForImageTextToText.from_pretrained(source, config=config, **kw)
    except (OSError, ValueError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise VlmscopeError(f"cannot load model {source!r}: {first}") from None
    if device_map is None:
        hf_model.to(dev)
    hf_model.eval()
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    set_pixel_limits(processor, min_pixels, max_pixels)
    return hf_model, processor, cls(hf_model, processor), source


def set_pixel_limits(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Bound the processor's resize (image area in pixels): it decides the vision-token count."""
    for part in (getattr(processor, "image_processor", None), getattr(processor, "video_processor", None)):
        size = getattr(part, "size", None)
        if size is None:
            continue
        for key, value in (("shortest_edge", min_pixels), ("longest_edge", max_pixels)):
            if value is not None:
                if isinstance(size, dict):
                    size[key] = value
                else:
                    setattr(size, key, value)
