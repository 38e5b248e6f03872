"""The contextual-lens index: every token of a caption corpus, as the model's own LLM represents
it at chosen layers, searchable by cosine.

An index is a directory::

    manifest.json          model (source + config fingerprint), layers, corpus, parts, indexes
    captions.txt           the captions, one a line (caption id = line number); captions.offsets.npy
    parts/part-NNNNNN/     per part of `part_size` captions: layer-{i}.npy [n, D] unit vectors
                           (float32), caption_id.npy, position.npy (token index in its caption),
                           token_id.npy, token_text.npy
    parts/.part-NNNNNN.*.tmp a part being written; renamed into place only when complete
    index-layer-{i}.faiss  the search index of layer i; recall-layer-{i}.json beside it

Parts are written like the extraction store's: a process killed at any moment loses at most the
part in progress, and ``resume=True`` continues where it stopped. Only one part is in memory at a
time; the FAISS indexes are built from the parts on disk in a second pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np

from ...errors import VlmscopeError
from ...files import replacing, write_text
from . import ann
from .captions import iter_captions
from .common import layer_list

FORMAT = "vlmscope.lens-index"
MANIFEST = "manifest.json"


def model_identity(scope) -> dict:
    """The model an index belongs to: its source, and a fingerprint of its full config."""
    config = json.dumps(scope.model.config.to_dict(), sort_keys=True, default=str)
    return {"source": str(scope.source), "fingerprint": hashlib.sha256(config.encode()).hexdigest()[:16]}


def _write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=1))


def _copy_captions(src, column: str, out: Path) -> tuple[int, str]:
    """captions.txt and its line offsets, written under temporary names; (count, sha256)."""
    digest, offsets, pos = hashlib.sha256(), [0], 0
    with replacing(out / "captions.txt") as tmp:
        with open(tmp, "wb") as f:
            for text in iter_captions(src, column):
                line = (text + "\n").encode("utf-8")
                f.write(line)
                digest.update(line)
                pos += len(line)
                offsets.append(pos)
        if len(offsets) == 1:
            raise VlmscopeError(
                f"caption file {str(src)!r} has no captions (give one caption a line, a CSV column "
                f"or JSONL with a {column!r} field)"
            )
        np.save(out / "captions.offsets.npy", np.array(offsets, dtype=np.int64))
    return len(offsets) - 1, digest.hexdigest()[:16]


def _forward_part(scope, captions: list[str], layers: list[int], batch_size: int) -> dict[str, np.ndarray]:
    """Every caption token's unit state at each layer, with caption-local positions and text."""
    from ...inputs import Example

    tok = scope.processor.tokenizer
    cols: dict[str, list] = {k: [] for k in ("caption_id", "position", "token_id", "token_text")}
    vecs: dict[int, list] = {i: [] for i in layers}
    for a in range(0, len(captions), batch_size):
        batch = captions[a : a + batch_size]
        trace = scope.forward([Example(c) for c in batch], "llm.layers", layers=layers, tokens="text")
        for b, tm in enumerate(trace.token_maps):
            pos = trace.positions[f"llm.layers.{layers[0]}"][b]
            ids = [tm.input_ids[p] for p in pos]
            cols["caption_id"] += [a + b] * len(pos)
            cols["position"] += [p - tm.prompt[0] for p in pos]
            cols["token_id"] += ids
            cols["token_text"] += [tok.decode([i]) for i in ids]
            for i in layers:
                vecs[i].append(ann.normalize(trace[f"llm.layers.{i}"][b].float().numpy()))
    out: dict[str, np.ndarray] = {
        "caption_id": np.array(cols["caption_id"], dtype=np.int64),
        "position": np.array(cols["position"], np.int32),
        "token_id": np.array(cols["token_id"], dtype=np.int64),
        "token_text": np.array(cols["token_text"], dtype=str),
    }
    out.update({f"layer-{i}": np.concatenate(vecs[i]) for i in layers})
    return out


def _save_part(parts: Path, part: int, first_caption: int, arrays: dict[str, np.ndarray]) -> None:
    arrays = {**arrays, "caption_id": arrays["caption_id"] + first_caption}
    with replacing(parts / f"part-{part:06d}") as tmp:  # written as parts/.part-NNNNNN.<pid>.tmp
        tmp.mkdir()
        for name, arr in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, arr)
                f.flush()
                os.fsync(f.fileno())


def finished_parts(parts: Path) -> dict[int, Path]:
    return {int(p.name[5:]): p for p in sorted(parts.glob("part-[0-9]*")) if p.is_dir()}


def build_index(
    scope,
    captions: str | Path,
    layers="all",
    out_dir: str | Path = "lens-index",
    *,
    column: str = "caption",
    batch_size: int = 16,
    part_size: int = 512,
    resume: bool = False,
    approx_above: int = ann.APPROX_ABOVE,
    max_parts: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Run the LLM over every caption (text only, batched) and index its tokens' states at `layers`.

    ``max_parts`` stops after writing that many new parts (the index stays incomplete until a run
    with ``resume=True`` finishes it). Returns the index directory."""
    layers = layer_list(scope, layers)
    out, say = Path(out_dir), progress or (lambda msg: None)
    manifest_path, ident = out / MANIFEST, model_identity(scope)
    if manifest_path.exists():
        if not resume:
            raise VlmscopeError(f"{out} already holds a lens index: pass --resume to finish it, or give an empty --out")
        old = json.loads(manifest_path.read_text())
        _check_same(old, ident, layers, out)
        count, sha = old["captions"]["count"], old["captions"]["sha256"]
        if not (out / "captions.txt").exists():
            raise VlmscopeError(f"{out}: captions.txt is missing; rebuild the index into an empty directory")
    else:
        if out.exists() and any(out.iterdir()):
            raise VlmscopeError(f"{out} is not empty and holds no lens index: give an empty or new --out")
        out.mkdir(parents=True, exist_ok=True)
        count, sha = _copy_captions(captions, column, out)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "model": ident,
        "layers": layers,
        "dim": int(scope.adapter.language_model.embed_tokens.weight.shape[1]),
        "captions": {"path": str(captions), "count": count, "sha256": sha, "column": column},
        "part_size": part_size,
        "complete": False,
    }
    if manifest_path.exists():
        part_size = json.loads(manifest_path.read_text())["part_size"]
        manifest["part_size"] = part_size
    _write_json(manifest_path, manifest)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    for stale in parts.glob(".part-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    done, new = finished_parts(parts), 0
    n_parts = -(-count // part_size)
    with open(out / "captions.txt", encoding="utf-8") as f:
        for part in range(n_parts):
            chunk = [line.rstrip("\n") for line in islice(f, part_size)]
            if part in done:
                continue
            if max_parts is not None and new >= max_parts:
                say(f"stopped after {new} new parts: {len(finished_parts(parts))}/{n_parts} done")
                return out
            _save_part(parts, part, part * part_size, _forward_part(scope, chunk, layers, batch_size))
            new += 1
            say(f"part {part + 1}/{n_parts}")
    manifest["indexes"] = _build_faiss(out, layers, approx_above, say)
    manifest["vectors"] = sum(
        int(np.load(p / "position.npy", mmap_mode="r").shape[0]) for p in finished_parts(parts).values()
    )
    manifest["complete"] = True
    _write_json(manifest_path, manifest)
    return out


def _build_faiss(out: Path, layers: list[int], approx_above: int, say) -> dict:
    faiss = ann.faiss_module()
    dirs = list(finished_parts(out / "parts").values())
    infos = {}
    for i in layers:
        batches = lambda i=i: (np.load(d / f"layer-{i}.npy", mmap_mode="r") for d in dirs)  # noqa: E731
        n = sum(len(x) for x in batches())
        dim = next(batches()).shape[1]
        index, info = ann.build(batches, dim, n, approx_above=approx_above)
        with replacing(out / f"index-layer-{i}.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        _write_json(out / f"recall-layer-{i}.json", {"layer": i, **info})
        infos[str(i)] = info
        say(f"layer {i}: {info['kind']} index over {n} vectors, recall@10 {info['recall_at_10']:.3f}")
    return infos


def _check_same(manifest: dict, ident: dict, layers: list[int] | None, where) -> None:
    built = manifest["model"]
    if built["fingerprint"] != ident["fingerprint"]:
        raise VlmscopeError(
            f"{where} was built with another model ({built['source']}, config "
            f"{built['fingerprint']}); this is {ident['source']} (config {ident['fingerprint']}): "
            f"build an index with this model"
        )
    if layers is not None and layers != manifest["layers"]:
        raise VlmscopeError(f"{where} holds layers {manifest['layers']}, not {layers}: resume with the same --layers")
