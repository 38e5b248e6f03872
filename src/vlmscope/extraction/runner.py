"""One extraction run: a source, a preset, a loaded model, an output directory.

Rows are split into parts of `checkpoint_every` rows; this process takes the unfinished parts it
owns, runs them in batches (one forward or one generate per batch) and hands the rows to the
store writer. A part becomes visible only when complete, so after a crash `resume=True` redoes
the part in progress and nothing else; the result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from ..data.sources import Source
from ..errors import VlmscopeError
from ..files import write_failure
from ..limits import check_context_length
from ..store.directory import FINGERPRINT, check_directory, write_failures, write_run
from ..store.layout import FORMAT, RUN_FILE, VERSION, Failure, finished_parts
from ..store.lock import StoreLock
from ..store.reader import Store
from ..store.verify import check_part, set_aside
from ..store.writer import COMPRESSIONS, StoreWriter
from .batches import Loader, PartEnd, PartStart, Work
from .distributed import Context, agree
from .presets import Preset

SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_OOM = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)
PACKAGES = (
    "vlmscope",
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "h5py",
    "numpy",
    "pillow",
    "accelerate",
    "datasets",
    "pyarrow",
)


@dataclass
class Summary:
    """What this process did, and the state of the store when it finished."""

    out: Path
    rows: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # stage -> count
    parts_written: int = 0
    parts_done_before: int = 0
    seconds: float = 0.0
    complete: bool = False
    store_rows: int | None = None
    store_failures: int | None = None
    ctx: Context = field(default_factory=Context)
    parts_set_aside: list[str] = field(default_factory=list)  # damaged parts renamed *.damaged, redone

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rows_per_s(self) -> float:
        return (self.rows + self.failed) / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        who = f"process {self.ctx.rank}/{self.ctx.world}: " if self.ctx.world > 1 else ""
        stages = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
        out = [
            f"{who}extracted {self.rows} rows, {self.failed} failed{f' ({stages})' if stages else ''} "
            f"in {self.seconds:.1f} s ({self.rows_per_s:.2f} rows/s); {self.parts_written} parts written, "
            f"{self.parts_done_before} were already done"
        ]
        if self.parts_set_aside:
            out.append(f"damaged parts set aside and redone: {', '.join(self.parts_set_aside)}")
        if self.complete:
            out.append(
                f"store {self.out}: complete, {self.store_rows} rows, {self.store_failures} failures "
                f"(listed in failures.jsonl)"
            )
        else:
            out.append(f"store {self.out}: not complete yet (other processes still running, or rerun with --resume)")
        return out


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def model_meta(scope, revision: str | None = None) -> dict:
    """Everything about the model that decides the numbers: id, revision, dtype, attention, pixels."""
    info = scope.describe()
    size = getattr(getattr(scope.processor, "image_processor", None), "size", None)
    get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return {
        "source": scope.source,
        "revision": revision or getattr(scope.model.config, "_commit_hash", None),
        "family": info["family"],
        "class": info["class"],
        "dtype": info["dtype"],
        "attn_implementation": info["attn_implementation"],
        "min_pixels": get("shortest_edge") if size is not None else None,
        "max_pixels": get("longest_edge") if size is not None else None,
        "layers": info["llm"]["layers"],
        "hidden_size": info["llm"]["hidden_size"],
        "vision_blocks": info["vision"]["blocks"],
        "vision_hidden_size": info["vision"]["hidden_size"],
    }


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    kind = "out of memory" if isinstance(e, _OOM) else e.__class__.__name__
    return f"{kind}: {text}" if text else kind


def _release(scope) -> None:
    if scope.device.type == "cuda":
        torch.cuda.empty_cache()


def compute(scope, preset: Preset, work: Work, dtype: torch.dtype) -> tuple[list, list[Failure]]:
    """Records of a batch. A batch that runs out of memory (or that the model refuses) is retried
    one row at a time, and only the rows that still fail are recorded as failures."""
    try:
        return preset.records(preset.run(scope, work.batch, dtype), work.rows), []
    except (*_OOM, VlmscopeError) as e:
        _release(scope)
        if len(work.rows) == 1:
            row = work.rows[0]
            return [], [Failure(row.index, row.id, "model", _reason(e))]
    assert work.batch is not None, "only rows ready for the model are computed"
    records, failures = [], []
    for b, row in enumerate(work.rows):
        r, f = compute(scope, preset, Work(work.part, [row], work.batch.select(b)), dtype)
        records += r
        failures += f
    return records, failures


def extract(
    scope,
    source: Source,
    out: str | Path,
    preset: Preset,
    *,
    batch_size: int = 8,
    checkpoint_every: int = 1000,
    resume: bool = False,
    save_dtype: str = "float32",
    compression: str = "gzip",
    revision: str | None = None,
    progress: bool = True,
    ctx: Context | None = None,
) -> Summary:
    """Extract `preset` for every row of `source` into the store at `out` (see docs/extraction.md)."""
    ctx = ctx or Context()
    out = Path(out)
    if batch_size < 1 or checkpoint_every < 1:
        raise VlmscopeError(
            f"--batch-size and --checkpoint-every must be at least 1, got {batch_size} and {checkpoint_every}"
        )
    if save_dtype not in SAVE_DTYPES:
        raise VlmscopeError(f"unknown --save-dtype {save_dtype!r}; choose from {', '.join(SAVE_DTYPES)}")
    if compression not in COMPRESSIONS:
        raise VlmscopeError(f"unknown --compression {compression!r}; choose from {', '.join(COMPRESSIONS)}")
    preset.check(scope.adapter)
    total = len(source)
    if total == 0:
        raise VlmscopeError(f"source {str(source.path)!r} has no rows")
    model = model_meta(scope, revision)
    run = {
        "preset": preset.describe(),
        "source": source.describe(),
        FINGERPRINT: source.fingerprint(),
        "total_rows": total,
        "checkpoint_every": checkpoint_every,
        "save_dtype": save_dtype,
        "compression": compression,
        "model": {
            k: model[k] for k in ("source", "revision", "dtype", "attn_implementation", "min_pixels", "max_pixels")
        },
    }
    run = json.loads(json.dumps(run))  # compared with the run.json of a run being resumed
    settings = {"batch_size": batch_size, "processes": ctx.world, "device": str(scope.device)}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "model": model,
        "packages": package_versions(),
        "settings": settings,
        "command": sys.argv,
    }

    lock, set_aside_parts = StoreLock(out), []

    def claim():
        check_directory(out, None, True)  # a file, or a folder of something else: refused before the lock
        lock.exclusive()
        try:
            if check_directory(out, run, resume) is None:
                write_run(out, meta)
            else:
                set_aside_parts.extend(_set_aside_damaged(out))
        except BaseException:
            lock.release()
            raise

    try:
        agree(ctx, claim)
    except (OSError, RuntimeError) as e:
        _refuse_write_failure(e, out)
        raise
    lock.shared()  # held by every process of this run until it ends: another run is refused
    try:
        return _run(
            scope,
            source,
            out,
            preset,
            ctx,
            meta,
            total,
            checkpoint_every,
            batch_size,
            save_dtype,
            compression,
            progress,
            Summary(out, ctx=ctx, parts_set_aside=set_aside_parts),
        )
    except (OSError, RuntimeError) as e:
        _refuse_write_failure(e, out)
        raise
    finally:
        lock.release()


def _refuse_write_failure(e: BaseException, out: Path) -> None:
    """A full or read-only disk under the store, as one line naming the store (its finished parts
    are intact, the part in progress is discarded); any other error is left to its caller."""
    reason = write_failure(e)
    if reason is not None:
        raise VlmscopeError(
            f"cannot write store {str(out)!r}: {reason}; its finished parts are intact "
            "(free space, then rerun with --resume)"
        ) from None


def _set_aside_damaged(out: Path) -> list[str]:
    """Move finished parts that cannot be read out of the store; their rows are redone.

    Every part is read to the end, as `store verify` does: flipped bytes inside a compressed chunk
    leave the structure sound and fail only when that chunk is decompressed, and a part kept
    unread would fail every later read and export of the store. Reading costs one pass over the
    parts written before, once per resume."""
    moved = []
    for path in finished_parts(out).values():
        if check_part(path, full=True):
            moved.append(set_aside(path).name)
    return moved


def _run(
    scope,
    source: Source,
    out: Path,
    preset: Preset,
    ctx: Context,
    meta: dict,
    total: int,
    checkpoint_every: int,
    batch_size: int,
    save_dtype: str,
    compression: str,
    progress: bool,
    summary: Summary,
) -> Summary:
    """Extract this process's unfinished parts; the directory is claimed and locked."""
    from tqdm import tqdm

    settings = meta["settings"]
    run_json = (out / RUN_FILE).read_text()
    n_parts = -(-total // checkpoint_every)
    done = finished_parts(out)
    mine = {p for p in range(n_parts) if ctx.owns(p) and p not in done}
    todo = sum(min((p + 1) * checkpoint_every, total) - p * checkpoint_every for p in mine)
    summary.parts_done_before = sum(1 for p in done if ctx.owns(p))

    dtype = SAVE_DTYPES[save_dtype]
    writer = StoreWriter(out, run_json, compression, attrs={**settings, "process": ctx.rank})
    new_tokens = preset.max_new_tokens if preset.generate else 0
    loader = Loader(
        source,
        mine,
        checkpoint_every,
        total,
        batch_size,
        lambda examples: scope.prepare(examples, with_answers=False),
        preset.needs_image,
        check_length=lambda n: check_context_length(scope.model.config, n, new_tokens),
    )
    bar = tqdm(
        total=todo,
        unit="row",
        disable=not (progress and ctx.main),
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        desc=f"extract {preset.name}",
    )
    start = time.perf_counter()
    try:
        for item in loader:
            if isinstance(item, PartStart):
                writer.begin(item.part, item.first, item.stop)
            elif isinstance(item, PartEnd):
                writer.commit(item.part)
                summary.parts_written += 1
            else:
                failures = list(item.failures)
                if item.batch is not None:
                    records, more = compute(scope, preset, item, dtype)
                    failures += more
                    writer.rows(item.part, records)
                    summary.rows += len(records)
                for f in failures:
                    writer.fail(item.part, f)
                    summary.failures[f.stage] = summary.failures.get(f.stage, 0) + 1
                bar.update(len(item.rows) + len(item.failures))
    except BaseException:
        loader.close()
        bar.close()
        try:
            writer.close()  # finished parts are kept; the part in progress is discarded
        except Exception:
            pass
        raise
    loader.close()
    bar.close()
    writer.close()
    summary.seconds = time.perf_counter() - start

    if len(finished_parts(out)) == n_parts:  # the last process to finish lists the failures
        with Store(out) as store:
            failures = store.failures()
            write_failures(out, failures)
            summary.complete, summary.store_rows, summary.store_failures = True, len(store), len(failures)
    return summary
