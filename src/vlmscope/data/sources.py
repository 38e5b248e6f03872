"""Dataset sources for extraction: an image folder, a VQA CSV, JSONL, a saved HF dataset.

Every source yields `Row`s in a fixed order with their position in the source, so a run can be
split across processes and resumed. Rows stream: a source never holds its rows in memory. A row
that fails validation still comes out, with ``error`` set, so the run can record it and go on.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VlmscopeError
from ..inputs import load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
KINDS = ("folder", "csv", "jsonl", "hf")
# accepted column names, first match wins
ID_COLUMNS = ("question_id", "id")
IMAGE_COLUMNS = ("image_id", "image_name", "image", "image_path", "images")
QUESTION_COLUMNS = ("question", "prompt", "query", "text")
ANSWER_COLUMNS = ("answer", "gt_answer")
DEFAULT_PROMPT = "Describe the image."


@dataclass
class Row:
    """One row of a source. ``images`` are paths relative to ``root`` or callables returning a
    PIL image (datasets that store the pixels)."""

    index: int
    id: str
    question: str
    answer: str = ""
    images: list[Any] = field(default_factory=list)
    root: Path | None = None
    error: str | None = None

    @property
    def image_refs(self) -> list[str]:
        return [i if isinstance(i, str) else f"<{self.id}:image{k}>" for k, i in enumerate(self.images)]

    def load_images(self) -> list:
        """The row's images as RGB PIL images; a bad path raises VlmscopeError naming it."""
        out = []
        for item in self.images:
            if callable(item):
                out.append(load_image(item()))
            else:
                out.append(load_image(resolve_image(item, self.root)))  # resolve_image keeps it inside root
        return out


def resolve_image(ref: str, root: Path | None) -> Path:
    """`ref` inside `root`; without an extension, the first existing `ref.<ext>`.

    A reference that leaves `root` (``../``, an absolute path, a symlink out) is refused. The
    candidate is resolved once, after the extension is found: a loader resolves every row's path.
    """
    if root is None:
        return Path(ref)
    base = _resolved_root(str(root), os.getcwd())
    path = base / ref
    if not path.suffix and not path.exists():
        for ext in IMAGE_EXTENSIONS:
            cand = path.with_name(path.name + ext)
            if cand.is_file():
                path = cand
                break
    path = path.resolve()
    if path != base and base not in path.parents:
        raise VlmscopeError(f"image path {ref!r} escapes the images directory {str(base)!r}")
    return path


@functools.lru_cache(maxsize=16)
def _resolved_root(root: str, cwd: str) -> Path:
    """A source's images directory, resolved once (`cwd` keys a relative root)."""
    return Path(root).resolve()


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def text_encoding(path: Path, what: str) -> str:
    """The encoding to read a CSV / JSONL with: UTF-8, or the one its byte-order mark names.

    The whole file is checked here, line by line, so a bad byte anywhere (a Latin-1 export, UTF-16
    without a BOM) is one error naming its line before a model is loaded, not a traceback mid-run.
    """
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise VlmscopeError(f"cannot read {what} {str(path)!r}: {e.strerror}") from None
    encoding = next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")
    hint = "save it as UTF-8 (a byte-order mark is fine)"
    if encoding.startswith("utf-8"):
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise VlmscopeError(
                        f"{what} {str(path)!r} is not UTF-8: line {lineno} has byte "
                        f"0x{line[e.start]:02x} at column {e.start + 1}; {hint}"
                    ) from None
                if b"\0" in line:
                    raise VlmscopeError(
                        f"{what} {str(path)!r} has NUL bytes on line {lineno} (UTF-16 without a "
                        f"byte-order mark?); {hint}"
                    )
        return encoding
    lineno = 0
    try:
        with path.open(encoding=encoding, newline="") as f:
            for _ in f:
                lineno += 1
    except UnicodeDecodeError:
        raise VlmscopeError(
            f"{what} {str(path)!r} starts with a {encoding.upper()} byte-order mark but is not "
            f"valid {encoding.upper()} after line {lineno}; {hint}"
        ) from None
    return encoding


class Source:
    """Base: `__len__` counts rows without loading them, `__iter__` yields them in order."""

    kind = ""

    def __init__(self, path: str | Path, limit: int | None = None):
        self.path = Path(path)
        self.limit = limit
        self._len: int | None = None

    def __len__(self) -> int:
        if self._len is None:
            n = self._count()
            self._len = n if self.limit is None else min(n, self.limit)
        return self._len

    def __iter__(self) -> Iterator[Row]:
        for row in self._rows():
            if self.limit is not None and row.index >= self.limit:
                return
            yield row

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()), "limit": self.limit}

    def fingerprint(self) -> dict:
        """Row count and a SHA-256 over every row's id, question, answer and image references, in
        order: a resumed run checks it, so a shuffled, edited or regrown source is refused instead
        of mixing two datasets in one store. Image pixels are not hashed (too slow for a dataset)."""
        h, n = hashlib.sha256(), 0
        for row in self:
            h.update(json.dumps([row.index, row.id, row.question, row.answer, row.image_refs, row.error]).encode())
            h.update(b"\n")
            n += 1
        return {"rows": n, "sha256": h.hexdigest()}

    def _count(self) -> int:
        return sum(1 for _ in self._rows())

    def _rows(self) -> Iterator[Row]:
        raise NotImplementedError


class ImageFolder(Source):
    """Every image file under a folder (recursively, sorted), asked the same prompt."""

    kind = "folder"

    def __init__(self, path, prompt: str = DEFAULT_PROMPT, limit: int | None = None):
        super().__init__(path, limit)
        self.prompt = prompt
        if not self.path.is_dir():
            raise VlmscopeError(f"image folder not found: {str(path)!r}")

    def _files(self) -> list[str]:
        out = []
        for dirpath, _, files in os.walk(self.path):
            rel = Path(dirpath).relative_to(self.path)
            out += [(rel / f).as_posix() for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        return sorted(out)

    def _count(self) -> int:
        return len(self._files())

    def _rows(self):
        for i, rel in enumerate(self._files()):
            yield Row(i, rel, self.prompt, images=[rel], root=self.path)

    def describe(self) -> dict:
        return {**super().describe(), "prompt": self.prompt}


def _pick(columns, accepted: tuple[str, ...], override: str | None = None) -> str | None:
    if override:
        return override if override in columns else None
    return next((c for c in accepted if c in columns), None)


class _Tabular(Source):
    """Shared by CSV, JSONL and HF datasets: column names resolved once, rows validated one by one."""

    def __init__(
        self,
        path,
        images_dir: str | Path | None,
        prompt: str | None = None,
        limit: int | None = None,
        columns: dict[str, str] | None = None,
    ):
        super().__init__(path, limit)
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.prompt = prompt
        self.overrides = columns or {}
        self.encoding: str | None = None  # set by check(), once

    def _resolve_columns(self, columns, what: str, require_id: bool = False) -> dict[str, str | None]:
        cols = {
            "id": _pick(columns, ID_COLUMNS, self.overrides.get("id")),
            "image": _pick(columns, IMAGE_COLUMNS, self.overrides.get("image")),
            "question": _pick(columns, QUESTION_COLUMNS, self.overrides.get("question")),
            "answer": _pick(columns, ANSWER_COLUMNS, self.overrides.get("answer")),
        }
        needed = {
            "image": IMAGE_COLUMNS,
            **({"id": ID_COLUMNS} if require_id else {}),
            **({} if self.prompt else {"question": QUESTION_COLUMNS}),
        }
        for key, accepted in needed.items():
            if cols[key] is None:
                want = self.overrides.get(key) or " or ".join(accepted)
                raise VlmscopeError(
                    f"{what} {str(self.path)!r} has no {key} column: expected {want} "
                    f"(columns: {', '.join(map(str, columns))})"
                )
        return cols

    def _row(self, i: int, rec: dict, cols: dict) -> Row:
        rid = str(rec.get(cols["id"], "") if cols["id"] else "").strip() or str(i)
        question = str(rec.get(cols["question"]) or "").strip() if cols["question"] else ""
        answer = rec.get(cols["answer"]) if cols["answer"] else ""
        if isinstance(answer, (list, tuple)):
            answer = answer[0] if answer else ""
        images = self._images(rec.get(cols["image"]), i)
        row = Row(
            i, rid, question or (self.prompt or ""), str(answer if answer is not None else ""), images, self.images_dir
        )
        if not images:
            row.error = f"row {i} ({rid}): empty {cols['image']}"
        elif not row.question:
            row.error = f"row {i} ({rid}): empty {cols['question']}"
        return row

    def _images(self, value, i: int) -> list:
        if value is None or value == "":
            return []
        if isinstance(value, (list, tuple)):
            return [v for v in value if v not in (None, "")]
        return [value]


class VqaCsv(_Tabular):
    """``question_id,image_id,question,answer`` (``image_name`` / ``gt_answer`` also accepted);
    images are ``<images_dir>/<image_id>`` (an id without extension finds ``<image_id>.png`` etc.)."""

    kind = "csv"

    def _open(self):
        if self.encoding is None:
            self.encoding = text_encoding(self.path, "CSV")
        try:
            f = self.path.open(newline="", encoding=self.encoding)
        except OSError as e:
            raise VlmscopeError(f"cannot read CSV {str(self.path)!r}: {e.strerror}") from None
        reader = csv.DictReader(f)
        cols = self._resolve_columns(reader.fieldnames or [], "CSV", require_id=True)
        return f, reader, cols

    def check(self) -> None:
        f, _, _ = self._open()
        f.close()

    def _rows(self):
        f, reader, cols = self._open()
        with f:
            for i, rec in enumerate(reader):
                yield self._row(i, rec, cols)

    def describe(self) -> dict:
        assert self.images_dir is not None
        return {**super().describe(), "images_dir": str(self.images_dir.resolve()), "prompt": self.prompt}


class Jsonl(_Tabular):
    """One JSON object per line: ``{"id", "image" | "images", "question", "answer"}`` (the CSV's
    column names are accepted too). A line that is not a JSON object becomes a failed row."""

    kind = "jsonl"

    def check(self) -> None:
        if not self.path.is_file():
            raise VlmscopeError(f"JSONL file not found: {str(self.path)!r}")
        if self.encoding is None:
            self.encoding = text_encoding(self.path, "JSONL")

    def _rows(self):
        self.check()
        with self.path.open(encoding=self.encoding) as f:
            lines = (line for line in f if line.strip())
            for i, line in enumerate(lines):
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not a JSON object")
                    cols = self._resolve_columns(list(rec), f"record {i} of")
                except ValueError as e:  # VlmscopeError included: a record without the needed keys
                    yield Row(i, str(i), "", error=f"record {i}: {e}")
                    continue
                yield self._row(i, rec, cols)

    def describe(self) -> dict:
        assert self.images_dir is not None
        return {**super().describe(), "images_dir": str(self.images_dir.resolve()), "prompt": self.prompt}


class HfDataset(_Tabular):
    """A dataset saved with `datasets.save_to_disk`; images from an Image column (pixels stored
    in the dataset, decoded only for rows that run) or a column of paths inside ``images_dir``."""

    kind = "hf"

    def __init__(self, path, images_dir=None, prompt=None, limit=None, columns=None, split: str | None = None):
        super().__init__(path, images_dir, prompt, limit, columns)
        try:
            import datasets
        except ImportError:
            raise VlmscopeError("reading a Hugging Face dataset needs `datasets`: pip install 'vlmscope[hf]'") from None
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise VlmscopeError(f"cannot load dataset {str(path)!r}: {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds)
            split = split or ("train" if "train" in ds else names[0])
            if split not in ds:
                raise VlmscopeError(f"no split {split!r} in {str(path)!r}; splits: {', '.join(names)}")
            ds = ds[split]
        self.split, self.ds = split, ds
        pixel_cols = [c for c, f in ds.features.items() if _image_feature(datasets, f)]
        if not self.overrides.get("image") and pixel_cols:
            self.overrides = {**self.overrides, "image": pixel_cols[0]}
        self.cols = self._resolve_columns(list(ds.features), "dataset")
        self.pixels = self.cols["image"] in pixel_cols
        if not self.pixels and self.images_dir is None:
            raise VlmscopeError(f"column {self.cols['image']!r} of {str(path)!r} holds paths: pass --images-dir")
        self._decode = datasets.Image().decode_example

    def _count(self) -> int:
        return len(self.ds)

    def _images(self, value, i: int) -> list:
        if not self.pixels:
            return super()._images(value, i)
        items = value if isinstance(value, list) else [value]
        return [_Decode(self._decode, v) for v in items if v and (v.get("bytes") or v.get("path"))]

    def _rows(self):
        i = 0
        # arrow batches: image columns come as {bytes, path}, decoded only when a row runs
        for table in self.ds.with_format("arrow").iter(batch_size=256):
            for rec in table.to_pylist():
                yield self._row(i, rec, self.cols)
                i += 1

    def describe(self) -> dict:
        return {
            **super().describe(),
            "split": self.split,
            "columns": self.cols,
            "images_dir": str(self.images_dir.resolve()) if self.images_dir else None,
            "prompt": self.prompt,
        }


def _image_feature(datasets, feature) -> bool:
    """An Image column, or a list of images."""
    return isinstance(feature, datasets.Image) or isinstance(getattr(feature, "feature", None), datasets.Image)


@dataclass
class _Decode:
    """A stored image, decoded on call."""

    decode: Callable
    value: dict

    def __call__(self):
        from PIL import Image

        try:
            return self.decode(self.value)
        except (Image.DecompressionBombError, OSError, ValueError) as e:  # a bomb, a corrupt or truncated image
            where = self.value.get("path") or "stored image"
            raise VlmscopeError(f"cannot read image {where!r}: {e.__class__.__name__}: {e}") from None


def open_source(
    path: str | Path,
    kind: str | None = None,
    *,
    images_dir: str | Path | None = None,
    prompt: str | None = None,
    limit: int | None = None,
    columns: dict[str, str] | None = None,
    split: str | None = None,
) -> Source:
    """Open `path` as a source; `kind` (folder, csv, jsonl, hf) is guessed from the path if omitted.

    For CSV and JSONL the images directory defaults to ``images/`` beside the file if it exists,
    else the file's own folder.
    """
    path = Path(path)
    if kind is None:
        kind = _guess_kind(path)
    if kind not in KINDS:
        raise VlmscopeError(f"unknown source type {kind!r}; choose from {', '.join(KINDS)}")
    if limit is not None and limit < 1:
        raise VlmscopeError(f"--limit must be at least 1, got {limit}")
    if kind == "folder":
        return ImageFolder(path, prompt or DEFAULT_PROMPT, limit)
    if kind == "hf":
        return HfDataset(path, images_dir, prompt, limit, columns, split)
    if images_dir is None:
        images_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    if not Path(images_dir).is_dir():
        raise VlmscopeError(f"images directory not found: {str(images_dir)!r}")
    src = (VqaCsv if kind == "csv" else Jsonl)(path, images_dir, prompt, limit, columns)
    src.check()
    return src


def _guess_kind(path: Path) -> str:
    if path.is_dir():
        if (
            (path / "dataset_info.json").is_file()
            or (path / "dataset_dict.json").is_file()
            or (path / "state.json").is_file()
        ):
            return "hf"
        return "folder"
    if not path.exists():
        raise VlmscopeError(f"source not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise VlmscopeError(
        f"cannot tell the type of source {str(path)!r}; pass --source-type "
        f"({', '.join(KINDS)}): a folder of images, .csv, .jsonl, or a saved HF dataset"
    )
