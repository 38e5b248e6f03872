"""Train the bundled shapes model: a small Qwen3-VL that answers questions about shape scenes.

    python scripts/train_shapes.py --out src/vlmscope/assets/shapes-model

Seeded and CPU-only. Scenes are generated on the fly (every step sees new images), prompts are
tokenized once per distinct question, and each image's vision features are computed once and
shared by several questions about it. The language loss covers the answer word and `<|im_end|>`
only. A tiny vision tower learns shapes slowly from answers alone, so linear probes on the merged
vision tokens (colour and shape of the object under each token) add a dense loss during training;
the probes are thrown away and the saved model is a plain Qwen3-VL.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlmscope.data import shapes
from vlmscope.models.tiny import build_processor, build_tokenizer, tiny_config


@dataclass
class TrainConfig:
    out: str = "src/vlmscope/assets/shapes-model"
    seed: int = 0
    steps: int = 2400
    images_per_step: int = 16
    questions_per_image: int = 4
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.05
    hidden: int = 128
    text_layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 128
    vision_depth: int = 4
    vision_heads: int = 4
    curriculum_steps: int = 300  # scenes grow from 2 to 4 objects over these steps
    eval_every: int = 100
    eval_n: int = 200
    eval_seed: int = 1
    aux_weight: float = 1.0  # weight of the per-vision-token colour/shape loss (0 = answers only)
    max_minutes: float = 58.0  # stop early (and still save) after this long; 0 = no limit
    threads: int = 1  # one thread is faster than two on a busy two-core machine


def shapes_tokenizer():
    """A tokenizer in which every question word and every answer is one token."""
    corpus = "\n".join(["system", "user", "assistant", "You are a helpful assistant.",
                        *shapes.all_questions(), *shapes.ANSWERS])
    tok = build_tokenizer(corpus, vocab_size=400)
    for word in shapes.ANSWERS:
        if len(tok(word, add_special_tokens=False)["input_ids"]) != 1:
            raise AssertionError(f"answer {word!r} is not a single token")
    return tok


def build_model(cfg: TrainConfig, tokenizer):
    """A randomly initialised Qwen3-VL whose learned position grid matches the image's patch grid."""
    from transformers import AutoModelForImageTextToText

    config = tiny_config("qwen3_vl", tokenizer, text_layers=cfg.text_layers, vision_depth=cfg.vision_depth,
                         hidden=cfg.hidden, heads=cfg.heads, kv_heads=cfg.kv_heads,
                         vision_hidden=cfg.vision_hidden)
    config.vision_config.num_heads = cfg.vision_heads
    config.vision_config.num_position_embeddings = (shapes.IMAGE_SIZE // config.vision_config.patch_size) ** 2
    torch.manual_seed(cfg.seed)
    return AutoModelForImageTextToText.from_config(config)


class Encoder:
    """Turns scenes and questions into model inputs without the processor in the loop.

    Prompt tokens and M-RoPE positions come from the processor and the model once per distinct
    question; images are patchified in torch exactly as the image processor does it.
    """

    def __init__(self, model, processor):
        ip = processor.image_processor
        self.patch, self.merge, self.tps = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        self.mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
        grid = shapes.IMAGE_SIZE // self.patch
        self.grid_thw = torch.tensor([1, grid, grid])
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id
        self.answer_ids = {a: tok(a, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
                           for a in shapes.ANSWERS}
        blank = shapes.generate_scene(0, n_objects=0).image
        self.prompts = {}
        for q in shapes.all_questions():
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
            text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            enc = processor(text=[text], images=[blank], return_tensors="pt")
            pos, _ = model.model.get_rope_index(enc["input_ids"], enc["mm_token_type_ids"], enc["image_grid_thw"])
            self.prompts[q] = (enc["input_ids"][0], pos[:, 0])
            if not torch.allclose(enc["pixel_values"], self.pixels([blank]), atol=1e-5):
                raise AssertionError("torch patchify differs from the image processor")

    def pixels(self, images) -> torch.Tensor:
        u8 = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        x = (u8.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        b, c, h, w = x.shape
        p, m = self.patch, self.merge
        x = x[:, None].expand(b, self.tps, c, h, w)
        x = x.reshape(b, self.tps, c, h // p // m, m, p, w // p // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(b * (h // p) * (w // p), c * self.tps * p * p)

    def batch(self, images, questions: list[list[str]], answers: list[list[str]]) -> dict:
        """Image b's questions follow each other; sequences are right-padded, answers appended."""
        ids, pos, targets, where = [], [], [], []
        for b, qs in enumerate(questions):
            for k, q in enumerate(qs):
                p_ids, p_pos = self.prompts[q]
                a_ids = self.answer_ids[answers[b][k]]
                n = len(p_ids)
                extra = torch.arange(len(a_ids)) + p_pos.max() + 1
                ids.append(torch.cat([p_ids, torch.tensor(a_ids[:-1], dtype=torch.long)]))
                pos.append(torch.cat([p_pos, extra[:-1].expand(3, -1)], dim=1))
                targets.append(a_ids)
                where.append(n - 1)
        length = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), length), self.pad_id)
        mask = torch.zeros((len(ids), length), dtype=torch.long)
        positions = torch.zeros((3, len(ids), length), dtype=torch.long)
        for i, (x, p) in enumerate(zip(ids, pos)):
            input_ids[i, :len(x)], mask[i, :len(x)], positions[:, i, :len(x)] = x, 1, p
        return {"pixel_values": self.pixels(images), "image_grid_thw": self.grid_thw.expand(len(images), 3),
                "repeats": torch.tensor([len(q) for q in questions]),
                "input_ids": input_ids, "attention_mask": mask, "position_ids": positions,
                "first": torch.tensor(where), "targets": targets}


def token_labels(scenes: list[shapes.Scene], cell: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour and shape of the object covering most of each merged vision token's cell (-1: none)."""
    from PIL import Image, ImageDraw

    colours, kinds = [], []
    for scene in scenes:
        side = scene.image.size[0]
        n = side // cell
        best = np.zeros((n, n))
        colour, kind = np.full((n, n), -1), np.full((n, n), -1)
        for obj in scene.objects:
            mask = Image.new("L", scene.image.size)
            shapes.draw_object(ImageDraw.Draw(mask), obj, 1)
            cover = np.asarray(mask, dtype=float).reshape(n, cell, n, cell).mean((1, 3))
            win = (cover > best) & (cover >= 0.2)
            best = np.maximum(best, cover)
            colour[win], kind[win] = list(shapes.COLOURS).index(obj.colour), shapes.SHAPES.index(obj.shape)
        colours.append(colour.ravel())
        kinds.append(kind.ravel())
    return torch.from_numpy(np.concatenate(colours)), torch.from_numpy(np.concatenate(kinds))


def answer_logits(model, batch: dict, vision_out: list | None = None) -> torch.Tensor:
    """Logits at each sequence's answer positions, shape (sequences, answer_len, vocab).

    `vision_out`, if given, receives the merged vision tokens (one row per token, all images)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    inner = model.model
    grid = batch["image_grid_thw"]
    vis = inner.visual(batch["pixel_values"], grid_thw=grid)
    per_image = int(grid[0].prod()) // inner.visual.spatial_merge_unit

    def spread(x):
        return x.view(len(grid), per_image, -1).repeat_interleave(batch["repeats"], dim=0).reshape(-1, x.shape[-1])

    if vision_out is not None:
        vision_out.append(vis.pooler_output)
    image = BaseModelOutputWithDeepstackFeatures(
        pooler_output=(spread(vis.pooler_output),), deepstack_features=[(spread(f),) for f in vis.deepstack_features])
    out = inner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], mm_encoder_outputs={"image": image})
    span = max(len(t) for t in batch["targets"])
    idx = batch["first"][:, None] + torch.arange(span)[None]
    idx = idx.clamp(max=out.last_hidden_state.shape[1] - 1)
    hidden = out.last_hidden_state.gather(1, idx[..., None].expand(-1, -1, out.last_hidden_state.shape[-1]))
    return model.lm_head(hidden)


def loss_fn(logits: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    span = logits.shape[1]
    labels = torch.tensor([t + [-100] * (span - len(t)) for t in targets])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def sample_step(rng: np.random.Generator, n_images: int, per_image: int, max_objects: int):
    """Fresh scenes, each with `per_image` questions of different types."""
    scenes, questions, answers = [], [], []
    types = shapes.QUESTION_TYPES
    for _ in range(n_images):
        scene = shapes.generate_scene(rng, n_objects=int(rng.integers(1, max_objects + 1)))
        start = int(rng.integers(len(types)))
        qs = []
        for j in range(len(types)):
            q = shapes.ask(scene, types[(start + j) % len(types)], rng)
            if q is not None:
                qs.append(q)
            if len(qs) == per_image:
                break
        scenes.append(scene)
        questions.append([q.question for q in qs])
        answers.append([q.answer for q in qs])
    return scenes, questions, answers


@torch.no_grad()
def heldout_accuracy(model, encoder: Encoder, records, batch_size: int = 100) -> dict[str, float]:
    """Teacher-forced accuracy of the first answer token (what greedy decoding emits first)."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        batch = encoder.batch([r.image for r in chunk], [[r.question] for r in chunk], [[r.answer] for r in chunk])
        pred = answer_logits(model, batch)[:, 0].argmax(-1)
        for r, p, t in zip(chunk, pred.tolist(), batch["targets"]):
            hits.setdefault(r.question_type, []).append(p == t[0])
    model.train()
    acc = {k: float(np.mean(v)) for k, v in sorted(hits.items())}
    acc["all"] = float(np.mean([h for v in hits.values() for h in v]))
    return acc


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(cfg: TrainConfig) -> dict:
    """Train, save model + processor + training metrics to `cfg.out`, return the metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = shapes_tokenizer()
    side = shapes.IMAGE_SIZE
    processor = build_processor("qwen3_vl", tokenizer, min_pixels=side * side, max_pixels=side * side)
    model = build_model(cfg, tokenizer)
    model.train()
    encoder = Encoder(model, processor)
    heldout = shapes.make_dataset(cfg.eval_n, seed=cfg.eval_seed)
    # Probes on the merged vision tokens; they shape the vision tower early and are not saved.
    torch.manual_seed(cfg.seed + 1)
    aux = torch.nn.ModuleDict({"colour": torch.nn.Linear(cfg.hidden, len(shapes.COLOURS)),
                               "shape": torch.nn.Linear(cfg.hidden, len(shapes.SHAPES))})

    named = [*model.named_parameters(), *aux.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    start, curve, evals, running, running_aux = time.time(), [], [], [], []
    done = 0
    for step in range(cfg.steps):
        if cfg.max_minutes and time.time() - start > cfg.max_minutes * 60:
            break
        rng = np.random.default_rng([cfg.seed, step])
        max_objects = min(4, 2 + (2 * step) // max(1, cfg.curriculum_steps))
        scenes, qs, ans = sample_step(rng, cfg.images_per_step, cfg.questions_per_image, max_objects)
        batch = encoder.batch([s.image for s in scenes], qs, ans)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        vision: list[torch.Tensor] = []
        answer_loss = loss_fn(answer_logits(model, batch, vision), batch["targets"])
        loss = answer_loss
        if cfg.aux_weight:
            colour, kind = token_labels(scenes)
            aux_loss = (F.cross_entropy(aux["colour"](vision[0]), colour, ignore_index=-1)
                        + F.cross_entropy(aux["shape"](vision[0]), kind, ignore_index=-1))
            loss = loss + cfg.aux_weight * aux_loss
            running_aux.append(aux_loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(answer_loss.item())
        done += 1
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            acc = heldout_accuracy(model, encoder, heldout)
            minutes = (time.time() - start) / 60
            curve.append({"step": step + 1, "loss": round(float(np.mean(running)), 4), "minutes": round(minutes, 2)})
            evals.append({"step": step + 1, **{k: round(v, 4) for k, v in acc.items()}})
            print(f"step {step + 1} loss {curve[-1]['loss']:.4f} aux {np.mean(running_aux or [0]):.3f} "
                  f"acc {acc['all']:.3f} "
                  + " ".join(f"{k}={v:.2f}" for k, v in acc.items() if k != "all")
                  + f" {minutes:.1f} min", flush=True)
            running, running_aux = [], []
    model.eval()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    metrics = {"training": {
        "config": asdict(cfg), "steps_done": done, "minutes": round((time.time() - start) / 60, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_size": [side, side], "vision_token_grid": [side // 32, side // 32],
        "loss_curve": curve, "heldout_teacher_forced": evals,
    }}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    return train(TrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
