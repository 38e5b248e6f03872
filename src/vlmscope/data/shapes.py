"""Synthetic scenes of coloured shapes with exact ground truth, and questions about them.

The bundled model is trained and scored on these scenes: every object's box is known to the
pixel, so attention maps, probes and occlusion effects can be checked against the truth. Each
question is asked only when it has exactly one right answer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 192
# Seeds of the bundled model's data (docs/shapes-model.md): training drew its scenes from seed 0
# (and measured progress on seed 1); the held-out figures of its model card use seed 1000, which
# is the default here, so `vlmscope shapes` never hands out scenes the model was trained on.
TRAINING_SEEDS = (0, 1)
DEFAULT_SEED = 1000
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 210, 25),
    "green": (40, 165, 55),
    "blue": (35, 80, 225),
    "purple": (140, 55, 190),
}
SHAPES = ("circle", "square", "triangle")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COUNT_WORDS = ("zero", "one", "two", "three", "four")
QUESTION_TYPES = ("colour_of_shape", "shape_of_colour", "position", "exists", "count")
TEMPLATES = {
    "colour_of_shape": ("What colour is the {shape}?",),
    "shape_of_colour": ("What shape is the {colour} object?",),
    "position": (
        "Is the {colour} {shape} on the left or the right?",
        "Is the {colour} {shape} at the top or the bottom?",
    ),
    "exists": ("Is there {article} {colour} {shape}?",),
    "count": ("How many shapes are there?", "How many {plural} are there?"),
}
ANSWERS = (*COLOURS, *SHAPES, "left", "right", "top", "bottom", "yes", "no", *COUNT_WORDS)
CSV_COLUMNS = ["question_id", "image_id", "question", "answer", "question_type", "box_x0", "box_y0", "box_x1", "box_y1"]

# Light, low-saturation backgrounds: far from every shape colour in RGB.
_BACKGROUNDS = [(238, 238, 238), (225, 225, 228), (245, 242, 232), (230, 236, 240), (214, 214, 210)]
_MIN_SIZE, _MAX_SIZE = 34, 56
_GAP = 4  # free pixels between two objects' boxes
_POS_MARGIN = 12  # a position question needs the object's centre this far from the midline


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1, y1 exclusive


@dataclass(frozen=True)
class Difficulty:
    """How hard a scene is to read. ``gap`` < 0 lets boxes overlap by up to -gap pixels (a later
    object then hides part of an earlier one); ``contrast`` (lo, hi) draws c per object and fills
    it with background + c * (colour - background), None for full colour."""

    objects: tuple[int, int]  # inclusive range of the number of objects
    min_size: int
    max_size: int
    gap: int
    contrast: tuple[float, float] | None


DIFFICULTIES = {
    # what the bundled model was trained on
    "easy": Difficulty((1, 4), _MIN_SIZE, _MAX_SIZE, _GAP, None),
    # small (about one vision token), more of them, touching or overlapping, faded
    "hard": Difficulty((2, 4), 18, 32, -4, (0.4, 0.75)),
}


def _difficulty(name: str) -> Difficulty:
    if name not in DIFFICULTIES:
        from ..errors import VlmscopeError

        raise VlmscopeError(f"unknown difficulty {name!r}; choose from {', '.join(DIFFICULTIES)}")
    return DIFFICULTIES[name]


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    box: Box

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass
class Scene:
    image: Image.Image
    objects: list[ShapeObject]
    background: tuple[int, int, int]
    texture: str = "flat"  # of the background: flat | noise | gradient

    def without(self, index: int) -> Image.Image:
        """The image with object `index` painted over by the background: the counterfactual scene
        that tells which object an answer depends on. Flat and gradient backgrounds come back
        exactly; noise is redrawn with the same amplitude. Pixels of objects drawn later (over it)
        stay."""
        mask, on_top = Image.new("1", self.image.size), Image.new("1", self.image.size)
        draw_object(ImageDraw.Draw(mask), self.objects[index], 1)
        for later in self.objects[index + 1 :]:
            draw_object(ImageDraw.Draw(on_top), later, 1)
        covered = np.array(mask, dtype=bool) & ~np.array(on_top, dtype=bool)
        pixels = np.array(self.image)
        pixels[covered] = _texture(self.background, self.texture, self.image.size[0], np.random.default_rng(index))[
            covered
        ]
        return Image.fromarray(pixels)


@dataclass
class Question:
    question: str
    answer: str
    question_type: str
    box: Box | None = None


@dataclass
class Record:
    question_id: int
    image_id: str
    question: str
    answer: str
    question_type: str
    box: Box | None
    scene: Scene = field(repr=False)

    @property
    def image(self) -> Image.Image:
        return self.scene.image


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _overlaps(a: Box, b: Box, gap: int = 0) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill: int | tuple[int, ...]) -> None:
    """Draw without anti-aliasing, so the object's pixels span exactly its box."""
    x0, y0, x1, y1 = obj.box
    if obj.shape == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    else:
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=fill)


TEXTURES = ("flat", "noise", "gradient")


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[int, int, int], str]:
    base = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    texture = TEXTURES[rng.integers(3)]
    return _texture(base, texture, size, rng), base, texture


def _texture(base: tuple[int, int, int], texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size, 3] uint8 background: flat, faint noise (drawn from `rng`) or a faint diagonal gradient."""
    pixels = np.empty((size, size, 3), dtype=np.int16)
    pixels[:] = base
    if texture == "noise":
        pixels += rng.integers(-6, 7, (size, size, 1), dtype=np.int16)
    elif texture == "gradient":
        ramp = np.add.outer(np.arange(size), np.arange(size)) * (12.0 / (2 * size)) - 6
        pixels += np.rint(ramp).astype(np.int16)[:, :, None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def generate_scene(
    rng_or_seed,
    n_objects: int | None = None,
    size: int = IMAGE_SIZE,
    min_size: int | None = None,
    max_size: int | None = None,
    difficulty: str = "easy",
) -> Scene:
    """One image with 1-4 non-overlapping shapes (or `n_objects`), and each object's box.
    ``difficulty="hard"``: 2-4 small, faded shapes that may overlap (see `DIFFICULTIES`)."""
    rng = _rng(rng_or_seed)
    d = _difficulty(difficulty)
    min_size = d.min_size if min_size is None else min_size
    max_size = d.max_size if max_size is None else max_size
    n = int(n_objects if n_objects is not None else rng.integers(d.objects[0], d.objects[1] + 1))
    pixels, base, texture = _background(rng, size)
    objects: list[ShapeObject] = []
    for _ in range(1000 * max(n, 1)):
        if len(objects) == n:
            break
        s = int(rng.integers(min_size, max_size + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, 2))
        box = (x0, y0, x0 + s, y0 + s)
        if any(_overlaps(box, o.box, d.gap) for o in objects):
            continue
        objects.append(ShapeObject(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))], box))
    if len(objects) < n:
        raise ValueError(f"cannot place {n} shapes of {min_size}-{max_size} px with gap {d.gap} in {size} px")
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        jitter = rng.integers(-10, 11, 3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[obj.colour], jitter))
        if d.contrast is not None:
            c = rng.uniform(*d.contrast)
            fill = tuple(int(round(b + c * (f - b))) for f, b in zip(fill, base))
        draw_object(draw, obj, fill)
    return Scene(image, objects, base, texture)


def _text(question_type: str, variant: int, colour: str = "", shape: str = "") -> str:
    article = "an" if colour[:1] in tuple("aeiou") else "a"
    return TEMPLATES[question_type][variant].format(
        colour=colour, shape=shape, article=article, plural=PLURALS.get(shape, "")
    )


def all_questions() -> list[str]:
    """Every question text the generator can ask (the vocabulary a model must read)."""
    return sorted(
        {
            _text(t, v, c, s)
            for t, variants in TEMPLATES.items()
            for v in range(len(variants))
            for c in COLOURS
            for s in SHAPES
        }
    )


def _unique(objects: list[ShapeObject], key) -> list[ShapeObject]:
    values = [key(o) for o in objects]
    return [o for o, v in zip(objects, values) if values.count(v) == 1]


def ask(scene: Scene, question_type: str, rng_or_seed) -> Question | None:
    """A question of `question_type` with one right answer for `scene`, or None if there is none."""
    rng = _rng(rng_or_seed)
    objs = scene.objects
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    if question_type in ("colour_of_shape", "shape_of_colour"):
        # the named attribute must pick out exactly one object; the answer is its other attribute
        by_shape = question_type == "colour_of_shape"
        cands = _unique(objs, (lambda o: o.shape) if by_shape else (lambda o: o.colour))
        if not cands:
            return None
        o = pick(cands)
        return Question(
            _text(question_type, 0, o.colour, o.shape), o.colour if by_shape else o.shape, question_type, o.box
        )
    if question_type == "position":
        size = scene.image.size[0]
        placed = [
            (o, axis)
            for o in _unique(objs, lambda o: (o.colour, o.shape))
            for axis in (0, 1)
            if abs(o.centre[axis] - size / 2) >= _POS_MARGIN
        ]
        if not placed:
            return None
        o, axis = pick(placed)
        first = o.centre[axis] < size / 2
        answer = ("left", "right", "top", "bottom")[2 * axis + (not first)]
        return Question(_text(question_type, axis, o.colour, o.shape), answer, question_type, o.box)
    if question_type == "exists":
        present = {(o.colour, o.shape) for o in objs}
        if rng.random() < 0.5:
            cands = _unique(objs, lambda o: (o.colour, o.shape))
            if not cands:
                return None
            o = pick(cands)
            return Question(_text(question_type, 0, o.colour, o.shape), "yes", question_type, o.box)
        # Prefer absent pairs that share a colour or a shape with an object: they need binding.
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        near = [p for p in absent if any(p[0] == o.colour or p[1] == o.shape for o in objs)]
        c, s = pick(near if near and rng.random() < 0.8 else absent)
        return Question(_text(question_type, 0, c, s), "no", question_type, None)
    if question_type == "count":
        if rng.random() < 0.5:
            return Question(_text(question_type, 0), COUNT_WORDS[len(objs)], question_type, None)
        s = pick(SHAPES)
        n = sum(o.shape == s for o in objs)
        return Question(_text(question_type, 1, shape=s), COUNT_WORDS[n], question_type, None)
    raise ValueError(f"unknown question type {question_type!r}; use one of {', '.join(QUESTION_TYPES)}")


def make_dataset(
    n: int, seed: int = DEFAULT_SEED, question_types: tuple[str, ...] = QUESTION_TYPES, difficulty: str = "easy"
) -> list[Record]:
    """`n` records, one scene and one question each, question types in turn.

    Record i depends only on (seed, i, difficulty), so a longer dataset extends a shorter one.
    Hard records draw from their own stream and are named ``shapes_hard_<seed>_<i>``.
    """
    _difficulty(difficulty)
    easy = difficulty == "easy"
    records = []
    for i in range(n):
        rng = np.random.default_rng([seed, i] if easy else [seed, i, 1])
        qtype = question_types[i % len(question_types)]
        while True:
            scene = generate_scene(rng, difficulty=difficulty)
            q = ask(scene, qtype, rng)
            if q is not None:
                break
        name = f"shapes_{seed}_{i:06d}" if easy else f"shapes_{difficulty}_{seed}_{i:06d}"
        records.append(Record(i, name, q.question, q.answer, q.question_type, q.box, scene))
    return records


def occlude(scene: Scene, box: Box) -> Image.Image:
    """The scene's image with `box` filled with the background colour."""
    image = scene.image.copy()
    x0, y0, x1, y1 = box
    ImageDraw.Draw(image).rectangle([x0, y0, x1 - 1, y1 - 1], fill=scene.background)
    return image


def background_box(scene: Scene, box: Box, rng_or_seed, tries: int = 200) -> Box | None:
    """A box of the same size as `box` that overlaps no object, or None if none was found."""
    rng = _rng(rng_or_seed)
    w, h = box[2] - box[0], box[3] - box[1]
    size = scene.image.size[0]
    for _ in range(tries):
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        cand = (x0, y0, x0 + w, y0 + h)
        if not any(_overlaps(cand, o.box) for o in scene.objects):
            return cand
    return None


def export_vqa(n: int, out_dir: str | Path, seed: int = DEFAULT_SEED, difficulty: str = "easy") -> Path:
    """Write `n` records as `out_dir/questions.csv` plus `out_dir/images/*.png`; return the CSV path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / "questions.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in make_dataset(n, seed, difficulty=difficulty):
            r.image.save(out / "images" / f"{r.image_id}.png")
            box = list(r.box) if r.box else ["", "", "", ""]
            writer.writerow([r.question_id, r.image_id, r.question, r.answer, r.question_type, *box])
    return path
