"""Uploads -> an Example, within limits: byte size and pixel count are checked before any pixel is
decoded, and every refusal is a VlmscopeError of one line (the app shows it in the page).

A video is an animation (GIF, animated WebP or PNG: read with Pillow) or, when PyAV is installed,
an MP4/WebM/MOV file; its frames are sampled evenly and padded to a multiple of the model's
temporal patch (2 for every Qwen-VL family) by repeating the last frame.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import VlmscopeError
from ..inputs import Example, check_aspect, tag_orientation, to_rgb8, upright

VIDEO_CONTAINERS = (".mp4", ".webm", ".mov", ".mkv", ".avi")


@dataclass(frozen=True)
class Limits:
    """What one request may carry. The defaults keep a CPU session responsive and a shared
    server safe; `vlmscope app` exposes them as flags."""

    max_upload_mb: float = 20.0
    max_pixels: int = 16_000_000  # per image or frame
    max_images: int = 8
    max_frames: int = 16
    max_new_tokens: int = 64
    max_prompt_chars: int = 2000

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _name(path: str | os.PathLike) -> str:
    return Path(path).name


def _check_bytes(path: str | os.PathLike, limits: Limits) -> None:
    size = Path(path).stat().st_size
    if size > limits.max_upload_bytes:
        raise VlmscopeError(
            f"{_name(path)!r} is {size / 2**20:.1f} MB; uploads are limited to {limits.max_upload_mb:g} MB"
        )


def _check_pixels(im: Image.Image, name: str, limits: Limits) -> None:
    w, h = im.size
    if w * h > limits.max_pixels:
        raise VlmscopeError(
            f"{name!r} is {w}x{h} = {w * h} pixels; this app accepts at most {limits.max_pixels} pixels per image"
        )


def load_upload_image(path: str | os.PathLike, limits: Limits = Limits()) -> Image.Image:
    """One uploaded image as 8-bit RGB: size, pixel count (from the header), format and aspect
    ratio checked."""
    name = _name(path)
    _check_bytes(path, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, name, limits)
                turned, orientation = upright(im)  # a phone photo: as every viewer shows it
                rgb = tag_orientation(to_rgb8(turned, name), orientation)
    except VlmscopeError:
        raise
    except Image.DecompressionBombError:
        raise VlmscopeError(f"{name!r} has too many pixels to open") from None
    except Exception as e:  # PIL raises several types for damaged files
        raise VlmscopeError(f"cannot read {name!r} as an image ({e.__class__.__name__})") from None
    return check_aspect(rgb, name)


def load_upload_images(paths: Sequence[str | os.PathLike] | None, limits: Limits = Limits()) -> list[Image.Image]:
    paths = list(paths or [])
    if len(paths) > limits.max_images:
        raise VlmscopeError(f"{len(paths)} images uploaded; this app takes at most {limits.max_images}")
    return [load_upload_image(p, limits) for p in paths]


def sample_frames(n: int, k: int) -> list[int]:
    """`k` indices spread evenly over `n` frames (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return [round(i * (n - 1) / (k - 1)) for i in range(k)] if k > 1 else [0]


def pad_frames(frames: list[Image.Image], multiple: int) -> list[Image.Image]:
    """Repeat the last frame until the count is a multiple of `multiple` (the temporal patch)."""
    if not frames:
        raise VlmscopeError("the video has no frames")
    return frames + [frames[-1]] * (-len(frames) % max(multiple, 1))


def load_upload_video(path: str | os.PathLike, limits: Limits = Limits(), temporal_patch: int = 2) -> list[Image.Image]:
    """An uploaded video as a list of RGB frames (at most `limits.max_frames`, evenly sampled)."""
    name = _name(path)
    _check_bytes(path, limits)
    if Path(path).suffix.lower() in VIDEO_CONTAINERS:
        frames = _decode_container(path, name, limits)
    else:
        frames = _decode_animation(path, name, limits)
    frames = [check_aspect(f, name) for f in frames]
    if len({f.size for f in frames}) > 1:
        raise VlmscopeError(f"the frames of {name!r} differ in size")
    return pad_frames(frames, temporal_patch)


def _decode_animation(path, name: str, limits: Limits) -> list[Image.Image]:
    from PIL import ImageSequence

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, name, limits)
                n = getattr(im, "n_frames", 1)
                keep = set(sample_frames(n, limits.max_frames))
                return [to_rgb8(f.copy(), name) for i, f in enumerate(ImageSequence.Iterator(im)) if i in keep]
    except VlmscopeError:
        raise
    except Exception as e:
        raise VlmscopeError(
            f"cannot read {name!r} as a video ({e.__class__.__name__}); give an animated GIF, WebP or PNG"
            f" (MP4/WebM need PyAV: pip install av)"
        ) from None


def _decode_container(path, name: str, limits: Limits) -> list[Image.Image]:
    try:
        import av
    except ImportError:
        raise VlmscopeError(
            f"{name!r}: reading MP4/WebM/MOV needs PyAV (pip install av); an animated GIF, WebP or PNG works without it"
        ) from None
    try:
        with av.open(str(path)) as container:
            frames = [f.to_image() for f in container.decode(video=0)]
    except Exception as e:
        raise VlmscopeError(f"cannot decode {name!r} ({e.__class__.__name__})") from None
    if frames:
        _check_pixels(frames[0], name, limits)
    return [frames[i].convert("RGB") for i in sample_frames(len(frames), limits.max_frames)]


def build_example(
    prompt: str | None,
    image_paths: Sequence[str | os.PathLike] | None,
    video_path: str | os.PathLike | None,
    limits: Limits = Limits(),
    temporal_patch: int = 2,
) -> tuple[Example, list[list[Image.Image]]]:
    """The Example of one request and the frames of each visual (an image is one frame), in the
    order the model sees them: images, then the video."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise VlmscopeError("write a prompt first")
    if len(prompt) > limits.max_prompt_chars:
        raise VlmscopeError(
            f"the prompt has {len(prompt)} characters; this app takes at most {limits.max_prompt_chars}"
        )
    images = load_upload_images(image_paths, limits)
    videos = [load_upload_video(video_path, limits, temporal_patch)] if video_path else []
    if not images and not videos:
        raise VlmscopeError("upload an image or a video first")
    example = Example(prompt, images=images, videos=videos)
    return example, [[im] for im in images] + videos
