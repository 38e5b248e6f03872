"""Examples in, model-ready batches out: chat template, processor, padding, token maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import VlmscopeError
from .tokenmap import TokenMap, build_token_map

ImageLike = Any  # a path or a PIL image


@dataclass
class Example:
    """One request: images and/or video frames, a prompt, and optionally an answer to score.

    Images come before videos, then the prompt, as in the Qwen model cards. ``videos`` is a list
    of videos, each a list of frames.
    """

    prompt: str = ""
    images: Sequence[ImageLike] = ()
    videos: Sequence[Sequence[ImageLike]] = ()
    answer: str | None = None
    system: str | None = None
    id: str | None = None

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise VlmscopeError(f"the prompt must be text, got {type(self.prompt).__name__}: {self.prompt!r}")
        if isinstance(self.images, (str, Path)) or hasattr(self.images, "size") and hasattr(self.images, "mode"):
            self.images = [self.images]
        for what, items in (("images", self.images), ("video frames", [f for v in self.videos for f in v])):
            if not isinstance(items, (list, tuple)) or any(not _image_like(i) for i in items):
                raise VlmscopeError(f"{what} must be a list of paths or PIL images, got {items!r}")
        if not self.prompt.strip() and not self.images and not self.videos:
            raise VlmscopeError("empty example: give a prompt, an image or a video")


def _image_like(item) -> bool:
    return isinstance(item, (str, Path)) or hasattr(item, "convert")


@dataclass
class Batch:
    """Model inputs (left-padded) plus one TokenMap per example."""

    inputs: dict[str, torch.Tensor]
    token_maps: list[TokenMap]
    pad: list[int]  # left padding of each example
    examples: list[Example] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.token_maps)

    def select(self, b: int) -> Batch:
        """Example `b` alone, cut from this batch's tensors: equal to preparing it by itself (the
        processor treats each image on its own), without the images or the processor."""
        tm, pad = self.token_maps[b], self.pad[b]
        seq_shape = self.inputs["input_ids"].shape[:2]
        inputs: dict[str, torch.Tensor] = {}
        for key, value in self.inputs.items():
            kind = _PER_PATCH.get(key) or _PER_VISUAL.get(key)
            if torch.is_tensor(value) and value.shape[:2] == seq_shape:
                inputs[key] = value[b : b + 1, pad:]
            elif kind is None:
                raise ValueError(f"cannot cut example {b} out of a batch: unknown processor output {key!r}")
            else:
                per_patch = key in _PER_PATCH
                counts = [
                    sum(v.num_patches if per_patch else 1 for v in m.visuals if v.kind == kind) for m in self.token_maps
                ]
                first = sum(counts[:b])
                if counts[b]:  # the processor leaves out the image keys of a batch without images
                    inputs[key] = value[first : first + counts[b]]
        examples = self.examples[b : b + 1] if self.examples else []
        return Batch(inputs, [tm], [0], examples)

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])

    def to(self, device) -> Batch:
        self.inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        return self


MAX_IMAGE_PIXELS = 89_478_485  # PIL's own warning threshold (~ 9459 x 9459); raise it to open larger images
EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera sets instead of rotating the pixels
ORIENTATION_KEY = "vlmscope_exif_orientation"  # image.info: the EXIF orientation load_image applied


def load_image(item: ImageLike, root: str | Path | None = None):
    """Open an image as 8-bit RGB, upright; a path must exist, be readable and (given `root`) stay
    inside it.

    A phone photo stored sideways with an EXIF Orientation tag is turned the way every viewer
    shows it (`upright`), so the model, the maps and the token boxes all see the same picture;
    the tag applied is kept in ``image.info[ORIENTATION_KEY]`` and reaches the token map. An image
    over `MAX_IMAGE_PIXELS` (a decompression bomb, or a scan too large to process) is refused from
    its header, before any pixel is decoded; 16-bit and float images are scaled to 8 bits rather
    than clipped.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    if hasattr(item, "convert"):
        _check_size(item, "image")
        turned, orientation = upright(item)
        if turned is item and item.mode == "RGB":
            return item  # never drawn on: no copy
        return tag_orientation(to_rgb8(turned, "image"), orientation)
    path = Path(item)
    if root is not None:
        base = Path(root).resolve()
        path = (base / path).resolve()
        if base != path and base not in path.parents:
            raise VlmscopeError(f"image path {str(item)!r} escapes the images directory {str(base)!r}")
    if not path.is_file():
        raise VlmscopeError(f"image not found: {str(path)!r}")
    name = f"image {str(path)!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with its size
            with Image.open(path) as im:
                _check_size(im, name)
                turned, orientation = upright(im)
                return tag_orientation(to_rgb8(turned, name), orientation)
    except Image.DecompressionBombError as e:
        raise VlmscopeError(
            f"{name} is too large to open ({e}); vlmscope opens images of at most "
            f"{MAX_IMAGE_PIXELS} pixels (vlmscope.inputs.MAX_IMAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, VlmscopeError):
            raise
        raise VlmscopeError(f"cannot read {name}: {e.__class__.__name__}: {e}") from None


def upright(im):
    """(`im` turned as its EXIF Orientation tag says, the tag's value); 1 and `im` itself when
    there is no tag or it says the pixels are already upright. All eight values are handled
    (rotations by 90, 180 and 270 degrees, and their mirror images)."""
    from PIL import ImageOps

    try:
        orientation = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: the pixels are still readable, as every viewer shows them
        return im, 1
    if orientation not in range(2, 9):
        return im, 1
    return ImageOps.exif_transpose(im), orientation


def tag_orientation(image, orientation: int):
    """`image` marked with the EXIF orientation that turned it upright (recorded in the token map)."""
    if orientation != 1:
        image.info[ORIENTATION_KEY] = orientation
    return image


def orientation_of(image) -> int:
    """The EXIF orientation `load_image` applied to `image` (1: none)."""
    return int(image.info.get(ORIENTATION_KEY, 1))


def _check_size(im, name: str) -> None:
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise VlmscopeError(
            f"{name} is too large: {w}x{h} = {w * h} pixels; vlmscope opens images of at most "
            f"{MAX_IMAGE_PIXELS} pixels (vlmscope.inputs.MAX_IMAGE_PIXELS)"
        )


def to_rgb8(im, name: str = "image"):
    """`im` as 8-bit RGB. PIL's own ``convert("RGB")`` clips 16-bit grey to 255 and truncates
    floats, so high-bit-depth modes are scaled here: 16-bit by 1/257 (65535 -> 255), float in
    [0, 1] by 255. A float or 32-bit image outside those ranges is refused: its scale is unknown."""
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            lo, hi, top = 0.0, 1.0, 1.0
        else:
            lo, hi, top = 0.0, 65535.0, 65535.0
        if a.size and (not np.isfinite(a).all() or a.min() < lo or a.max() > hi):
            bad = "non-finite" if not np.isfinite(a).all() else f"in [{a.min():g}, {a.max():g}]"
            raise VlmscopeError(
                f"{name} has {mode!r} pixels {bad}; vlmscope reads float images in [0, 1] and "
                f"integer images in [0, 65535] (16 bits): convert it to 8-bit RGB first"
            )
        grey = np.rint(a * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")


MAX_ASPECT_RATIO = 200  # the Qwen-VL processors refuse anything longer than this


def check_aspect(image, source):
    """The processor's aspect-ratio limit, as one line naming the image instead of its traceback."""
    w, h = image.size
    if max(w, h) >= MAX_ASPECT_RATIO * max(min(w, h), 1):
        name = f"image {str(source)!r}" if isinstance(source, (str, Path)) else "an image"
        raise VlmscopeError(
            f"{name} is {w}x{h}: the Qwen-VL processors need an aspect ratio under {MAX_ASPECT_RATIO}; crop or pad it"
        )
    return image


_PER_PATCH = {"pixel_values": "image", "pixel_values_videos": "video"}  # one row per patch
_PER_VISUAL = {"image_grid_thw": "image", "video_grid_thw": "video", "second_per_grid_ts": "video"}


def messages_for(ex: Example, system: str | None = None, prompt: str | None = None) -> list[dict]:
    """The chat messages of `ex`; `system` / `prompt` stand in for its texts when given."""
    prompt = ex.prompt if prompt is None else prompt
    content = [{"type": "image"} for _ in ex.images] + [{"type": "video"} for _ in ex.videos]
    if ex.prompt:
        content.append({"type": "text", "text": prompt})
    msgs = [{"role": "user", "content": content}]
    if ex.system is not None:
        msgs.insert(0, {"role": "system", "content": ex.system if system is None else system})
    return msgs


def markup_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens (chat and vision markup such as ``<|im_end|>`` and
    ``<|image_pad|>``): text typed by a user never becomes one of them."""
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]


def plain_ids(tokenizer, text: str) -> list[int]:
    """`text` as ordinary tokens: special-token strings in it are spelled out, not parsed."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


class _PlainText:
    """User texts that contain special-token strings, rendered as a placeholder token and encoded
    as plain text afterwards.

    The chat template and the processor see the placeholder (the pad token, which no template
    writes), so the markup around a user's text, the image placeholders and their expansion are
    exactly the model's own; the user's text is then encoded with special tokens split into
    ordinary tokens and put where its placeholder stands. Texts without markup take the usual
    path unchanged, so their token ids are those of the model's own pipeline.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.markup = markup_tokens(tokenizer)
        self.placeholder = tokenizer.pad_token or "<|endoftext|>"
        self.placeholder_id = int(tokenizer.convert_tokens_to_ids(self.placeholder))
        self.texts: list[list[str]] = []  # per example, the texts its placeholders stand for

    def messages(self, ex: Example) -> list[dict]:
        escaped = [t if self._has_markup(t) else None for t in (ex.system, ex.prompt)]
        self.texts.append([t for t in escaped if t is not None])  # the template writes system first
        hide = [self.placeholder if t is not None else None for t in escaped]
        return messages_for(ex, *hide)

    def _has_markup(self, text: str | None) -> bool:
        return bool(text) and any(m in text for m in self.markup)  # type: ignore[operator]

    def splice(self, b: int, row: dict[str, list[int]]) -> dict[str, list[int]]:
        """Row `b` with each placeholder replaced by its text's plain tokens (other sequence keys
        repeat the placeholder's value: an ordinary text token's)."""
        texts = self.texts[b]
        if not texts:
            return row
        at = [i for i, t in enumerate(row["input_ids"]) if t == self.placeholder_id]
        if len(at) != len(texts):
            raise VlmscopeError(
                f"cannot encode a prompt holding special tokens as plain text: the chat template writes "
                f"{self.placeholder!r} itself ({len(at)} found, {len(texts)} expected)"
            )
        pieces = [plain_ids(self.tokenizer, t) for t in texts]
        out: dict[str, list[int]] = {}
        for key, values in row.items():
            spliced, last = [], 0
            for pos, ids in zip(at, pieces):
                spliced += values[last:pos] + (ids if key == "input_ids" else [values[pos]] * len(ids))
                last = pos + 1
            out[key] = spliced + values[last:]
        return out


def prepare(
    adapter, examples: Example | Sequence[Example], images_root: str | Path | None = None, with_answers: bool = True
) -> Batch:
    """Render the chat template, run the processor, append answers (teacher forcing), left-pad,
    and build a TokenMap per example.

    Text from a user (prompt, system prompt, answer) is encoded as plain text: a special-token
    string typed in it (``<|im_end|>``, ``<|image_pad|>``) reaches the model as the characters
    written, never as chat or vision markup (see `_PlainText`)."""
    examples = [examples] if isinstance(examples, Example) else list(examples)
    if not examples:
        raise VlmscopeError("no examples to prepare")
    processor = adapter.processor
    plain = _PlainText(processor.tokenizer)
    texts, images, videos, sizes, orientations = [], [], [], [], []
    for ex in examples:
        texts.append(processor.apply_chat_template(plain.messages(ex), tokenize=False, add_generation_prompt=True))
        ims = [check_aspect(load_image(i, images_root), i) for i in ex.images]
        vids = [[check_aspect(load_image(f, images_root), f) for f in frames] for frames in ex.videos]
        images += ims
        videos += vids
        sizes.append([im.size for im in ims] + [v[0].size for v in vids])
        orientations.append([orientation_of(im) for im in ims] + [orientation_of(v[0]) for v in vids])
    kw: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
    if images:
        kw["images"] = images
    if videos:
        kw["videos"] = videos
        kw["do_sample_frames"] = False
    processor.tokenizer.padding_side = "left"
    enc = processor(**kw)

    ids_in, mask = enc["input_ids"], enc["attention_mask"].bool()
    image_grids = iter(enc.get("image_grid_thw", torch.zeros(0, 3)).tolist())
    video_grids = iter(enc.get("video_grid_thw", torch.zeros(0, 3)).tolist())
    tokenizer = processor.tokenizer
    seq_keys = [k for k, v in enc.items() if torch.is_tensor(v) and v.shape[:2] == ids_in.shape]
    rows: list[dict[str, list[int]]] = []
    maps: list[TokenMap] = []
    for b, ex in enumerate(examples):
        row = plain.splice(b, {k: enc[k][b][mask[b]].tolist() for k in seq_keys})
        prompt_len = len(row["input_ids"])
        if with_answers and ex.answer is not None:
            ans = plain_ids(tokenizer, ex.answer) + [adapter.token_ids["im_end"]]
            row["input_ids"] += ans
            row["attention_mask"] += [1] * len(ans)
            for k in seq_keys:
                if k not in ("input_ids", "attention_mask"):
                    row[k] += [0] * len(ans)
        grid_list = [("image", tuple(next(image_grids))) for _ in ex.images] + [
            ("video", tuple(next(video_grids))) for _ in ex.videos
        ]
        maps.append(
            build_token_map(
                row["input_ids"],
                prompt_len,
                adapter.token_ids,
                grid_list,
                sizes[b],
                adapter.patch_size,
                adapter.merge_size,
                adapter.temporal_patch_size,
                adapter.turn_header,
                orientations[b],
            )
        )
        rows.append(row)

    length = max(len(r["input_ids"]) for r in rows)
    pad = [length - len(r["input_ids"]) for r in rows]
    inputs: dict[str, torch.Tensor] = {}
    for k in seq_keys:
        fill = tokenizer.pad_token_id if k == "input_ids" else 0
        inputs[k] = torch.tensor([[fill] * p + r[k] for p, r in zip(pad, rows)], dtype=enc[k].dtype)
    for k, v in enc.items():
        if k not in seq_keys:
            inputs[k] = v
    return Batch(inputs, maps, pad, examples)
