"""Questions with a ground-truth box: fresh shapes questions, or the rows of a VQA CSV that
carry ``box_x0,box_y0,box_x1,box_y1`` (pixels of the original image, x1/y1 exclusive), the
columns `vlmscope shapes` writes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import VlmscopeError
from ...inputs import Example

if TYPE_CHECKING:
    from ...data.shapes import Scene

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")


@dataclass
class BoxItem:
    id: str
    example: Example  # one image, the question
    box: tuple[float, float, float, float]
    answer: str = ""  # the ground-truth answer ("" when unknown)
    kind: str = "-"  # question type
    scene: Scene | None = None  # synthetic scenes: every object, for the counterfactuals of `reliance`

    def correct(self, predicted: str) -> bool | None:
        if not self.answer:
            return None
        return predicted.strip().lower() == self.answer.strip().lower()


def shapes_items(n: int, seed: int) -> list[BoxItem]:
    """The first `n` shapes questions of `seed` that are about one object (they have a box)."""
    from ...data.shapes import make_dataset

    if n < 1:
        raise VlmscopeError(f"--n must be at least 1, got {n}")
    records = [r for r in make_dataset(4 * n, seed=seed) if r.box is not None][:n]
    return [
        BoxItem(
            r.image_id, Example(r.question, images=[r.scene.image]), _box(r.box), r.answer, r.question_type, r.scene
        )
        for r in records
    ]


def csv_items(path, images_dir=None, n: int | None = None) -> list[BoxItem]:
    """Rows of a VQA CSV with a box (rows whose box cells are empty are skipped)."""
    from ...data.sources import VqaCsv, text_encoding

    path = Path(path)
    if not path.is_file():
        raise VlmscopeError(f"no such CSV file: {str(path)!r}")
    images_dir = Path(images_dir) if images_dir is not None else path.parent / "images"
    with path.open(newline="", encoding=text_encoding(path, "CSV")) as f:
        records = list(csv.DictReader(f))
    missing = [c for c in BOX_COLUMNS if records and c not in records[0]]
    if not records or missing:
        raise VlmscopeError(
            f"CSV {str(path)!r} needs the box columns {', '.join(BOX_COLUMNS)}"
            + (f" (missing: {', '.join(missing)})" if records else " and at least one row")
        )
    items = []
    for rec, row in zip(records, VqaCsv(path, images_dir)):
        cells = [str(rec.get(c) or "").strip() for c in BOX_COLUMNS]
        if not all(cells) or row.error:
            continue
        try:
            box = _box(cells)
        except ValueError:
            raise VlmscopeError(f"row {row.index} ({row.id}) of {str(path)!r}: bad box {cells}") from None
        kind = str(rec.get("question_type") or "-")
        image = row.load_images()[0]  # a bad path raises VlmscopeError naming it
        items.append(BoxItem(row.id, Example(row.question, images=[image]), box, row.answer, kind))
        if n is not None and len(items) >= n:
            break
    if not items:
        raise VlmscopeError(f"CSV {str(path)!r} has no row with a box")
    return items


def _box(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0, y0, x1, y1)


def box_items(source: str, n: int, seed: int, images_dir=None) -> list[BoxItem]:
    """`n` questions with a box: fresh shapes scenes of `seed` when `source` is ``shapes``,
    else the rows of the VQA CSV at `source`."""
    return shapes_items(n, seed) if source == "shapes" else csv_items(source, images_dir, n)
