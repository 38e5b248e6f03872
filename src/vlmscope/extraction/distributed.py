"""Running as one of K processes (torchrun, accelerate launch): which process this is, its
device, and the two moments the processes talk: checking the output directory, and nothing else.

Work is divided by part (part p goes to process p mod K), so processes never coordinate while
extracting and any number of them can resume any run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, part: int) -> bool:
        return part % self.world == self.rank


def from_env() -> Context:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE (torchrun and accelerate set them)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", 1))
    return Context(
        int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", world))
    )


def setup(device_map: str | None, device: str = "auto") -> tuple[Context, str | None]:
    """Join the process group when launched as several processes; return the context and the
    device this process should use (None: the caller's choice).

    With ``device_map="auto"`` the GPUs of a node are split evenly between its processes (set
    before CUDA starts), so K processes can each spread one large model over their share.
    """
    ctx = from_env()
    if ctx.world == 1:
        return ctx, None
    if device_map == "auto" and "CUDA_VISIBLE_DEVICES" not in os.environ:
        import subprocess

        try:
            n = len(
                subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout.splitlines()
            )
        except (OSError, subprocess.CalledProcessError):
            n = 0
        share = n // ctx.local_world
        if share:
            mine = range(ctx.local_rank * share, (ctx.local_rank + 1) * share)
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, mine))
    import torch
    import torch.distributed as dist

    one_gpu = torch.cuda.is_available() and device_map is None and device in ("auto", "cuda")
    if one_gpu:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if one_gpu else "gloo", timeout=timedelta(hours=2))
    return ctx, f"cuda:{ctx.local_rank}" if one_gpu else None


def agree(ctx: Context, fn: Callable[[], None]) -> None:
    """Run `fn` on the main process only; every process raises the error it raised, if any."""
    error = None
    if ctx.main:
        try:
            fn()
        except Exception as e:  # sent to the other processes, then raised everywhere
            error = e
    if ctx.world > 1:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise error
