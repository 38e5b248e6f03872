"""HALP extraction: `vlmscope extract --preset halp` against the model's own batched generate
(the floor), per compression, and memory against the number of rows.

- floor: `model.generate` over the same batches (inputs prepared beforehand, nothing stored);
- floor with processor: the same, opening the images and running the processor before each
  batch's generate, in line (what any extractor must do before the model runs);
- floor beside a processor process: the floor, while a second process opens the images and runs
  the processor for the next batch, one batch ahead, and hands nothing over: what the loader's
  work costs the model when it neither shares the GIL nor transfers a batch, the best any loader
  can reach on this machine (two vCPUs share caches and memory bandwidth);
- floor fed by a processor process: the same process hands each batch over through two slots of
  shared memory that both processes mapped once (the pipe carries only the batch's small fields):
  what a loader process would cost if it kept such a ring;
- capture only: HALP's generate with its captures over the same ready batches (nothing stored),
  the same with each batch from vlmscope's loader thread (`extraction.batches.Loader`, as
  `extract` runs it) and handed over by the processor process;
- vlmscope: `extract(..., make_preset("halp"))` over the same rows: images opened and the
  processor run by the loader thread, one generate per batch capturing VF, VT and QT, the store
  written by the writer thread (`--compressions gzip,lzf,none`);
- seed-style loop (`--seed-loop`, slow): per row, batch 1, forward with output_hidden_states, then
  generate, one HDF5 group per sample.

Memory: `vlmscope extract` on `--memory-rows` (default 1000,10000,30000) rows, each in its own process;
peak RSS must not grow with the number of rows.

    python benchmarks/extract.py [--rows 200] [--batch-size 16] [--threads 1] [--rounds 5] [--small]

The model is the bundled shapes model (`--config shapes`, the default) or a random Qwen2.5-VL
(`--config small`: 4 layers, width 256; `--config wide`: 4 layers, width 1024, slow on a CPU, where
`--paths` times a subset beside the floor; `--config 7b`: Qwen2.5-VL-7B's shapes, for a GPU with
`--device cuda --dtype bfloat16`). Writes benchmarks/results/extract.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import FULL_7B, FULL_7B_EXTRA  # noqa: E402

RANDOM = {  # config -> (sizes, overrides of the sub-configs, description); all Qwen2.5-VL
    "tiny": (dict(), None, "random Qwen2.5-VL, 3 layers, width 64"),
    "small": (
        dict(text_layers=4, hidden=256, heads=8, kv_heads=4, vision_hidden=64),
        None,
        "random Qwen2.5-VL, 4 layers, width 256, vision width 64",
    ),
    # enough arithmetic per token that the model, not the interpreter, sets the pace
    "wide": (
        dict(text_layers=4, hidden=1024, heads=16, kv_heads=4, vision_hidden=256),
        None,
        "random Qwen2.5-VL, 4 layers, width 1024, vision width 256",
    ),
    "7b": (FULL_7B, FULL_7B_EXTRA, "random weights in Qwen2.5-VL-7B's shapes"),
}


def model_dir(tmp: Path, config: str = "shapes", device: str = "cpu") -> tuple[str, str]:
    """(path, description): the bundled shapes model (the small random model where it is not
    installed), or a random one built here (on `device`: a 7B model initialises in seconds there)."""
    from common import build_model

    from vlmscope.assets import bundled_model_dir

    bundled = bundled_model_dir()
    if config == "shapes" and bundled is not None:
        return str(bundled), "bundled shapes model (Qwen3-VL, 4 layers, width 128)"
    sizes, extra, what = RANDOM["small" if config == "shapes" else config]
    return build_model(tmp / config, "qwen2_5_vl", sizes, extra, device), what


def examples_of(rows: list) -> list:
    """The rows as examples with their images opened: what every loader does before the processor."""
    from vlmscope import Example

    return [Example(r.question, images=r.load_images(), id=r.id) for r in rows]


def seed_loop(scope, csv_path: Path, out: Path, layers: list[int], max_new_tokens: int, limit: int) -> int:
    """The seed's extractor, batch 1: forward with output_hidden_states, then generate, then a group per sample."""
    import csv

    import h5py
    import torch
    from PIL import Image

    model, proc = scope.model, scope.processor
    image_token = model.config.image_token_id
    visual = scope.adapter.visual
    out.mkdir(parents=True, exist_ok=True)
    f = h5py.File(out / "embeddings_part_001.h5", "w")
    rows = list(csv.DictReader(csv_path.open()))[:limit]
    for r in rows:
        image = Image.open(csv_path.parent / "images" / f"{r['image_id']}.png").convert("RGB")
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}]
        text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        inputs = proc(text=[text], images=[image], return_tensors="pt").to(scope.device)
        got = {}
        hook = visual.blocks[-1].register_forward_hook(lambda m, a, o, got=got: got.__setitem__("vf", o))
        with torch.no_grad():
            hs = model(**inputs, output_hidden_states=True).hidden_states
        hook.remove()
        vf = (got["vf"][0] if isinstance(got["vf"], tuple) else got["vf"]).float().mean(0).cpu().numpy()
        last_image = int((inputs["input_ids"][0] == image_token).nonzero()[-1])
        with torch.no_grad():
            seq = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id
            )
        answer = proc.tokenizer.decode(seq[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        g = f.create_group(f"question_id_{r['question_id']}")
        g["question"], g["image_id"], g["answer"], g["ground_truth_answer"] = (
            r["question"],
            r["image_id"],
            answer,
            r["answer"],
        )
        g["vision_only_representation"] = vf
        for name, pos in (("vision_token_representation", last_image), ("query_token_representation", -1)):
            sub = g.create_group(name)
            for i in layers:
                sub[f"layer_{i}"] = hs[i + 1][0, pos].float().cpu().numpy()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    f.close()
    return len(rows)


def _processor_worker(conn, model: str, csv_path: str, batch_size: int, threads: int, ring: str | None) -> None:
    """Prepare the batch starting at each row index received. Message (first, None): answer when
    done, hand nothing over; (first, slot): copy the batch's tensors into that slot of the shared
    `ring` and send the rest of the batch with where each tensor lies. Stop on None."""
    from multiprocessing import shared_memory

    import torch

    import vlmscope
    from vlmscope.data.sources import open_source

    torch.set_num_threads(max(threads, 1))
    scope = vlmscope.load(model, device="cpu")  # it only prepares batches
    rows = list(open_source(csv_path))
    shm = shared_memory.SharedMemory(name=ring) if ring else None
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        first, slot = msg
        chunk = rows[first : first + batch_size]
        batch = scope.prepare(examples_of(chunk), with_answers=False)
        if slot is None:
            conn.send(first)
            continue
        batch.examples = []
        conn.send(_pack(batch, shm.buf, slot * _SLOT_BYTES))
    if shm is not None:
        shm.close()


_SLOT_BYTES = 64 << 20  # one batch of shapes rows needs about 14 MiB


def _pack(batch, buf, base: int) -> tuple:
    """The batch's tensors copied into `buf` from `base`; returns (the batch without them, their places)."""
    import torch

    places, offset = {}, 0
    for name, t in list(batch.inputs.items()):
        if torch.is_tensor(t):
            t = t.contiguous()
            n = t.numel() * t.element_size()
            assert offset + n <= _SLOT_BYTES, "a batch larger than its slot"
            torch.frombuffer(buf, dtype=torch.uint8, count=n, offset=base + offset).copy_(t.view(-1).view(torch.uint8))
            places[name] = (t.dtype, tuple(t.shape), base + offset, n)
            offset += -(-n // 64) * 64
            del batch.inputs[name]
    return batch, places


def _unpack(batch, places: dict, flat):
    """The batch with its tensors as views of the shared buffer `flat` (nothing copied)."""
    for name, (dtype, shape, at, n) in places.items():
        batch.inputs[name] = flat[at : at + n].view(dtype).view(shape)
    return batch


class LoaderProcess:
    """A spawned process running the processor over the same rows, one batch ahead of the model:
    either handing nothing over (what the loader's work costs the model when it neither shares the
    GIL nor transfers a batch), or handing each batch over through two slots of shared memory
    mapped once by both processes (what a loader process with such a ring would cost)."""

    def __init__(self, model: str, csv_path: Path, batch_size: int, threads: int):
        import multiprocessing
        from multiprocessing import shared_memory

        import torch

        self.ring = shared_memory.SharedMemory(create=True, size=2 * _SLOT_BYTES)
        self.flat = torch.frombuffer(self.ring.buf, dtype=torch.uint8)
        self.flat.fill_(0)  # mapped and faulted in once, before the rounds
        ctx = multiprocessing.get_context("spawn")  # a forked child would cost the parent copy-on-write faults
        self.conn, child = ctx.Pipe()
        args = (child, model, str(csv_path), batch_size, threads, self.ring.name)
        self.process = ctx.Process(target=_processor_worker, args=args, daemon=True)
        self.process.start()
        assert self.conn.recv() == "ready"
        self.batch_size = batch_size

    def beside(self, batches: list, generate: Callable) -> None:
        """`generate` each of `batches` while the process prepares the next one (received and dropped)."""
        self.conn.send((0, None))  # the first batch is prepared before the model starts, as in any loader
        self.conn.recv()
        for k, b in enumerate(batches):
            ahead = (k + 1) * self.batch_size if k + 1 < len(batches) else None
            if ahead is not None:
                self.conn.send((ahead, None))
            generate(b)
            if ahead is not None:
                self.conn.recv()

    def fed(self, n_batches: int, run: Callable) -> None:
        """`run` each batch as the process hands it over, the next one prepared meanwhile."""
        self.conn.send((0, 0))
        for k in range(n_batches):
            batch = _unpack(*self.conn.recv(), self.flat)
            if k + 1 < n_batches:
                self.conn.send(((k + 1) * self.batch_size, (k + 1) % 2))  # the slot batch k-1 used
            run(batch)

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=30)
        del self.flat
        self.ring.close()
        self.ring.unlink()


def speed(args, tmp: Path) -> dict:
    """The floor and extraction with each compression over the same rows, interleaved by round."""
    import torch
    from common import interleave

    import vlmscope
    from vlmscope.data.shapes import export_vqa
    from vlmscope.data.sources import open_source
    from vlmscope.extraction import extract, make_preset
    from vlmscope.extraction.batches import Loader, Work
    from vlmscope.specs import parse_layers

    path, what = model_dir(tmp, args.config, args.device)
    csv_path = export_vqa(args.rows, tmp / "data", seed=0)
    scope = vlmscope.load(path, device=args.device, dtype=args.dtype)
    preset = make_preset("halp", max_new_tokens=args.max_new_tokens)
    rows = list(open_source(csv_path))
    examples = examples_of(rows)
    batches = [
        scope.prepare(examples[i : i + args.batch_size], with_answers=False).to(scope.input_device)
        for i in range(0, len(examples), args.batch_size)
    ]
    pad = scope.processor.tokenizer.pad_token_id

    def generate(b):
        scope.model.generate(**b.inputs, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=pad)

    def floor():  # the model's own batched generate over the same batches, inputs ready
        with torch.inference_mode():
            for b in batches:
                generate(b)

    process = LoaderProcess(path, csv_path, args.batch_size, args.threads)

    def same_as_first(b):  # the handed-over batch is the one prepared here
        for k, v in batches[0].inputs.items():
            assert not torch.is_tensor(v) or torch.equal(v, b.inputs[k]), k

    process.fed(1, same_as_first)

    def floor_beside():  # the same, a second process preparing each next batch meanwhile
        with torch.inference_mode():
            process.beside(batches, generate)

    def prepare(chunk):  # what a loader does for one batch: open the images, run the processor
        return scope.prepare(examples_of(chunk), with_answers=False).to(scope.input_device)

    def prepare_examples(examples):  # the loader's step after opening the images, as in extract()
        return scope.prepare(examples, with_answers=False)

    def floor_prepare():  # the same plus opening the images and running the processor, in line
        with torch.inference_mode():
            for r0 in range(0, len(rows), args.batch_size):
                generate(prepare(rows[r0 : r0 + args.batch_size]))

    def floor_fed():  # the floor, each batch handed over by the process through memory mapped once
        with torch.inference_mode():
            process.fed(len(batches), lambda b: generate(b.to(scope.input_device)))

    def capture(b):
        preset.run(scope, b, torch.float32)

    def capture_only():  # HALP's generate and captures over the same ready batches, nothing stored
        for b in batches:
            capture(b)

    def capture_thread():  # the same, each batch from vlmscope's loader thread, nothing stored
        loader = Loader(rows, {0}, len(rows), len(rows), args.batch_size, prepare_examples, needs_image=True)
        try:
            for item in loader:
                if isinstance(item, Work) and item.batch is not None:
                    capture(item.batch)
        finally:
            loader.close()

    def capture_fed():  # the same, each batch handed over by the process through memory mapped once
        process.fed(len(batches), lambda b: capture(b.to(scope.input_device)))

    runs = iter(range(10**6))
    stores: dict[str, Path] = {}  # compression -> the store its last run wrote

    def ours(compression: str):
        def run():
            stores[compression] = tmp / f"out{next(runs)}"
            summary = extract(
                scope,
                open_source(csv_path),
                stores[compression],
                preset,
                batch_size=args.batch_size,
                checkpoint_every=args.checkpoint_every,
                compression=compression,
                progress=False,
            )
            assert summary.rows == len(rows), summary.lines()

        return run

    paths = {
        "floor": floor,
        "floor_with_processor": floor_prepare,
        "floor_beside_processor_process": floor_beside,
        "floor_fed_by_process": floor_fed,
        "capture_only": capture_only,
        "capture_loader_thread": capture_thread,
        "capture_fed_by_process": capture_fed,
        **{f"vlmscope_{c}": ours(c) for c in args.compressions.split(",")},
    }
    try:  # the loader process is closed however this ends
        if args.paths:  # a subset, for a slow model: the floor is always timed
            keep = {"floor", *args.paths.split(",")}
            unknown = keep - set(paths)
            if unknown:
                raise SystemExit(f"unknown --paths {', '.join(sorted(unknown))}; choose from {', '.join(paths)}")
            paths = {k: v for k, v in paths.items() if k in keep}
        if args.seed_loop:
            layers = parse_layers("halp", scope.adapter.num_layers)
            paths["seed_loop"] = lambda: seed_loop(
                scope, csv_path, tmp / f"seed{next(runs)}", layers, args.max_new_tokens, args.rows
            )
        for fn in paths.values():
            fn()  # warm-up: the first calls with new shapes are slower
        res = interleave(paths, args.rounds, "floor", args.device)
    finally:
        process.close()
    sizes = {c: sum(p.stat().st_size for p in out.glob("part-*.h5")) for c, out in stores.items()}
    return {
        "model": what,
        "rows": len(rows),
        "paths": res,
        "store_bytes": sizes,
        "rows_per_s": {k: len(rows) / v["median_s"] for k, v in res.items()},
    }


def writer_costs(args, tmp: Path, width: int = 3584, rows: int = 1008) -> dict:
    """Seconds per 16-row batch the store writer spends (append + the part's commit) and the part's
    size, per compression, for HALP rows at Qwen2.5-VL-7B's width (11 float32 columns of 3584):
    random float32 values, and the same rounded to bfloat16 first (a bf16 model's captures are
    stored as float32, so the low half of every value is zero)."""
    import time

    import numpy as np
    import torch

    from vlmscope.store.layout import Record
    from vlmscope.store.writer import PartWriter

    rng = np.random.default_rng(0)
    names = ["vf/vision.blocks.31"] + [f"{k}/llm.layers.{i}" for k in ("vt", "qt") for i in (0, 7, 14, 21, 27)]
    out: dict = {}
    for origin in ("float32", "bfloat16"):

        def value(origin=origin):
            x = rng.standard_normal(width).astype(np.float32)
            return x if origin == "float32" else torch.from_numpy(x).bfloat16().float().numpy()

        recs = [
            Record(
                i,
                f"q{i}",
                fields={"question": "What colour is the square?", "gt_answer": "red"},
                arrays={n: value() for n in names},
            )
            for i in range(rows)
        ]
        for c in args.compressions.split(","):
            best = float("inf")
            for r in range(3):
                d = tmp / f"writer-{origin}-{c}-{r}"
                d.mkdir()
                w = PartWriter(d, 0, 0, rows, "{}", c)
                t = time.perf_counter()
                for k in range(0, rows, 16):
                    w.append(recs[k : k + 16])
                path = w.commit()
                best = min(best, time.perf_counter() - t)
            out[f"{c} ({origin} values)"] = {"seconds_per_batch": best / (rows / 16), "part_bytes": path.stat().st_size}
    return out


def memory_worker(model: str, csv_path: str, rows: int, out: str, args) -> dict:
    from common import measure, peak_rss, rss_bytes, setup

    import vlmscope
    from vlmscope.data.sources import open_source
    from vlmscope.extraction import extract, make_preset

    setup(args)
    scope = vlmscope.load(model, device=args.device, dtype=args.dtype)
    after_load = rss_bytes()
    seconds, growth, summary = measure(
        lambda: extract(
            scope,
            open_source(csv_path, limit=rows),
            out,
            make_preset("halp", max_new_tokens=args.memory_new_tokens),
            batch_size=args.batch_size,
            checkpoint_every=1000,
            progress=False,
        ),
        args.device,
    )
    return {
        "rows": summary.rows,
        "seconds": seconds,
        "rows_per_s": summary.rows / seconds,
        "peak_rss_mib": peak_rss() / 2**20,
        "rss_after_load_mib": after_load / 2**20,
        "growth_during_extract_mib": growth / 2**20,
    }


def memory(args, tmp: Path) -> tuple[str, list[dict]]:
    from vlmscope.data.shapes import export_vqa

    sizes = [int(s) for s in args.memory_rows.split(",") if s]
    if not sizes:
        return "", []
    path, what = model_dir(tmp, "tiny")
    csv_path = export_vqa(max(sizes), tmp / "memdata", seed=1)
    out = []
    for rows in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--memory-worker",
            path,
            str(csv_path),
            str(rows),
            str(tmp / f"mem{rows}"),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--threads",
            str(args.threads),
            "--batch-size",
            str(args.batch_size),
            "--memory-new-tokens",
            str(args.memory_new_tokens),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(
            f"  memory: {rows} rows, peak RSS {out[-1]['peak_rss_mib']:.0f} MiB, {out[-1]['rows_per_s']:.1f} rows/s",
            flush=True,
        )
    return what, out


def main(argv=None) -> int:
    from common import add_common, fmt_ratio, inverse, machine, setup, write

    ap = add_common(argparse.ArgumentParser(), "extract.json")
    ap.add_argument("--config", default="shapes", choices=("shapes", *RANDOM))
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--compressions", default="gzip,lzf,none")
    ap.add_argument("--paths", default="", help="comma-separated paths to time beside the floor (default: all)")
    ap.add_argument("--seed-loop", action="store_true", help="also time the seed-style loop (slow)")
    ap.add_argument("--memory-rows", default="1000,10000,30000")
    ap.add_argument("--memory-new-tokens", type=int, default=4)
    ap.add_argument("--memory-worker", nargs=4, metavar=("MODEL", "CSV", "ROWS", "OUT"))
    args = ap.parse_args(argv)
    if args.memory_worker:
        model, csv_path, rows, out = args.memory_worker
        print(json.dumps(memory_worker(model, csv_path, int(rows), out, args)))
        return 0
    if args.small:
        args.rows, args.rounds, args.memory_rows = 64, 3, "200,1000"
    setup(args)
    info = machine(args)
    with tempfile.TemporaryDirectory() as tmp:
        s = speed(args, Path(tmp))
        for k, v in s["paths"].items():
            if k != "floor":
                speed_ = fmt_ratio(inverse(v["vs_floor"]))
                print(f"  {k}: {s['rows_per_s'][k]:.1f} rows/s, {speed_} of the floor's speed", flush=True)
        s["writer"] = writer_costs(args, Path(tmp))
        for c, v in s["writer"].items():
            print(f"  writer, {c}: {v['seconds_per_batch'] * 1000:.1f} ms per 16 rows at width 3584", flush=True)
        mem_model, mem = memory(args, Path(tmp))
    write(
        args.out,
        {
            "benchmark": "extract",
            "config": args.config,
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "rounds": args.rounds,
            "machine": info,
            "speed": s,
            "memory_model": mem_model,
            "memory_new_tokens": args.memory_new_tokens,
            "memory": mem,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
