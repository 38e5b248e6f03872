"""TokenMap: where everything is in one example's token sequence, and which pixels each vision
token covers. It is the single source of truth that every method and renderer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .display import block, fields, span, table


@dataclass
class Visual:
    """One image or video in the sequence.

    ``segments`` are the [start, end) runs of its placeholder tokens (one run for an image; Qwen3-VL
    splits a video into one run per temporal group). Vision tokens are in raster order of the
    merged grid (t, h, w).
    """

    kind: str  # "image" | "video"
    index: int  # k-th visual of the example, in sequence order
    segments: list[tuple[int, int]]
    grid_thw: tuple[int, int, int]  # patch grid, before the spatial merge
    merged_thw: tuple[int, int, int]  # token grid the LLM sees
    original_size: tuple[int, int]  # (width, height) of the input image / frame
    resized_size: tuple[int, int]  # (width, height) after the processor's resize
    patch_size: int
    merge_size: int
    temporal_patch_size: int = 1
    orientation: int = 1  # EXIF orientation applied on loading (1: the file was stored upright)

    @property
    def positions(self) -> list[int]:
        return [p for s, e in self.segments for p in range(s, e)]

    @property
    def num_tokens(self) -> int:
        return sum(e - s for s, e in self.segments)

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w

    def token_boxes(self) -> np.ndarray:
        """[Nv, 4] float boxes (x0, y0, x1, y1) in original-image pixels, one per vision token,
        in raster order; the processor's resize is undone by scaling each axis back."""
        t, h, w = self.merged_thw
        cell = self.patch_size * self.merge_size
        sx = self.original_size[0] / self.resized_size[0]
        sy = self.original_size[1] / self.resized_size[1]
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        boxes = np.stack([xs * cell * sx, ys * cell * sy, (xs + 1) * cell * sx, (ys + 1) * cell * sy], -1)
        return np.tile(boxes.reshape(-1, 4), (t, 1)).astype(np.float32)

    def token_frames(self) -> np.ndarray:
        """[Nv, 2] first and last input frame that each vision token covers (videos)."""
        t, h, w = self.merged_thw
        starts = np.repeat(np.arange(t) * self.temporal_patch_size, h * w)
        return np.stack([starts, starts + self.temporal_patch_size - 1], -1)


@dataclass(repr=False)
class TokenMap:
    """Spans are [start, end) positions in the example's own (unpadded) sequence."""

    input_ids: list[int]
    visuals: list[Visual] = field(default_factory=list)
    system: tuple[int, int] | None = None
    prompt: tuple[int, int] | None = None  # content of the last user turn
    query: int = -1  # last prompt token: its output predicts the first answer token
    answer: tuple[int, int] | None = None  # answer / generated tokens, when known
    special_ids: dict[str, int] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.input_ids)

    def vision_positions(self, index: int | None = None) -> list[int]:
        vis = self.visuals if index is None else [self.visual(index)]
        return [p for v in vis for p in v.positions]

    def visual(self, index: int) -> Visual:
        if not 0 <= index < len(self.visuals):
            from .errors import VlmscopeError

            raise VlmscopeError(f"image:{index} does not exist: this example has {len(self.visuals)} images/videos")
        return self.visuals[index]

    def text_positions(self) -> list[int]:
        """Prompt tokens that are not vision placeholders or vision start/end markers."""
        if self.prompt is None:
            return []
        markers = {self.special_ids.get("vision_start"), self.special_ids.get("vision_end")}
        vision = set(self.vision_positions())
        return [p for p in range(*self.prompt) if p not in vision and self.input_ids[p] not in markers]

    def predicting_positions(self, n: int) -> list[int]:
        """The positions whose outputs predict answer tokens 0..n-1: the query, then each answer
        token but the last. ``generated`` selections and attention rows use these."""
        return [self.query + j for j in range(n)]

    def with_answer(self, answer_ids: list[int]) -> TokenMap:
        """A copy extended by generated tokens."""
        start = self.query + 1
        ids = self.input_ids[:start] + list(answer_ids)
        return TokenMap(
            ids,
            self.visuals,
            self.system,
            self.prompt,
            self.query,
            (start, start + len(answer_ids)),
            dict(self.special_ids),
        )

    def __repr__(self) -> str:
        visuals = ", ".join(
            f"{v.kind} {v.index}: {v.num_tokens} tokens {'x'.join(map(str, v.merged_thw))}" for v in self.visuals
        )
        spans = f"prompt {span(self.prompt)}, query {self.query}, answer {span(self.answer)}"
        return f"TokenMap({self.length} tokens; {spans}{'; ' + visuals if visuals else ''})"

    def _repr_html_(self) -> str:
        turns = fields(
            {"tokens": self.length, "system": span(self.system), "prompt": span(self.prompt)}
            | {"query (predicts answer token 0)": self.query, "answer": span(self.answer)}
        )
        visuals = table(
            ["visual", "positions", "token grid (t, h, w)", "tokens", "original size", "resized to", "EXIF"],
            [
                [
                    f"{v.kind} {v.index}",
                    " ".join(f"[{s}, {e})" for s, e in v.segments),
                    " x ".join(map(str, v.merged_thw)),
                    v.num_tokens,
                    " x ".join(map(str, v.original_size)),
                    " x ".join(map(str, v.resized_size)),
                    "turned upright" if v.orientation != 1 else "-",
                ]
                for v in self.visuals
            ],
        )
        return block("TokenMap", turns, visuals if self.visuals else "")

    def summary(self) -> dict:
        return {
            "length": self.length,
            "system": self.system,
            "prompt": self.prompt,
            "query": self.query,
            "answer": self.answer,
            "visuals": [
                {
                    "kind": v.kind,
                    "index": v.index,
                    "segments": v.segments,
                    "grid_thw": v.grid_thw,
                    "merged_thw": v.merged_thw,
                    "num_tokens": v.num_tokens,
                    "original_size": v.original_size,
                    "resized_size": v.resized_size,
                    "exif_orientation": v.orientation,
                }
                for v in self.visuals
            ],
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["visuals"] = [{**asdict(v), "token_boxes": v.token_boxes().tolist()} for v in self.visuals]
        return d


def build_token_map(
    input_ids: list[int],
    prompt_len: int,
    ids: dict[str, int],
    grids: list[tuple[str, tuple[int, int, int]]],
    sizes: list[tuple[int, int]],
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    turn_header,
    orientations: list[int] | None = None,
) -> TokenMap:
    """Locate turns and visuals in `input_ids` (prompt of `prompt_len` tokens, then any answer).

    `grids` lists (kind, grid_thw) per visual in the order the processor saw them, `sizes` their
    original (width, height), upright, and `orientations` the EXIF orientation applied to each on
    loading; `turn_header(ids, pos)` returns (role, first content position) of the
    turn opened by the <|im_start|> at `pos`.
    """
    runs: dict[str, list[tuple[int, int]]] = {
        "image": _runs(input_ids, ids["image"]),
        "video": _runs(input_ids, ids["video"]),
    }
    visuals: list[Visual] = []
    cursor = {"image": 0, "video": 0}
    for (kind, thw), size, orientation in zip(grids, sizes, orientations or [1] * len(sizes)):
        t, h, w = thw
        need, segs = t * h * w // merge_size**2, []
        while need > 0:  # Qwen3-VL videos: one run of placeholders per temporal group
            s, e = runs[kind][cursor[kind]]
            segs.append((s, e))
            need -= e - s
            cursor[kind] += 1
        visuals.append(
            Visual(
                kind,
                0,
                segs,
                (t, h, w),
                (t, h // merge_size, w // merge_size),
                (size[0], size[1]),
                (w * patch_size, h * patch_size),
                patch_size,
                merge_size,
                temporal_patch_size if kind == "video" else 1,
                orientation,
            )
        )
    visuals.sort(key=lambda v: v.segments[0][0])
    for i, v in enumerate(visuals):
        v.index = i

    system = prompt = None
    ends = [i for i, t in enumerate(input_ids[:prompt_len]) if t == ids["im_end"]]
    for pos in (i for i, t in enumerate(input_ids[:prompt_len]) if t == ids["im_start"]):
        role, content = turn_header(input_ids, pos)
        end = next((e for e in ends if e > pos), prompt_len)
        if role == "system":
            system = (content, end)
        elif role == "user":
            prompt = (content, end)
    answer = (prompt_len, len(input_ids)) if len(input_ids) > prompt_len else None
    special = {k: ids[k] for k in ("vision_start", "vision_end", "image", "video")}
    return TokenMap(list(input_ids), visuals, system, prompt, prompt_len - 1, answer, special)


def _runs(ids: list[int], token: int) -> list[tuple[int, int]]:
    out, p = [], 0
    while p < len(ids):
        if ids[p] == token:
            s = p
            while p < len(ids) and ids[p] == token:
                p += 1
            out.append((s, p))
        else:
            p += 1
    return out


def to_pixels(grid: np.ndarray, size: tuple[int, int], smooth: bool = False) -> np.ndarray:
    """[h, w] grid -> [H, W] array for an image of `size` = (W, H); nearest keeps token edges honest."""
    from PIL import Image

    img = Image.fromarray(np.asarray(grid, dtype=np.float32), mode="F")
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(img.resize(size, resample), dtype=np.float32)
