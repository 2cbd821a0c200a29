"""Data parallelism: one process per device under ``torchrun`` or ``accelerate launch``.

Both launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``).
Rank ``r`` evaluates samples ``r::world_size`` on device ``cuda:LOCAL_RANK`` (or the CPU) and writes its
own shard; the ranks meet at a ``torch.distributed`` barrier on the gloo backend (CPU tensors only, so it
works with and without GPUs), and rank 0 merges the shards and writes the reports::

    torchrun --nproc_per_node 8 -m vtc.eval.cli DATA.jsonl --model M --methods ... --out DIR
    accelerate launch --num_processes 8 -m vtc.eval.cli DATA.jsonl --model M --methods ... --out DIR
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(env: dict | None = None) -> Dist:
    """The process's place from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (a single process without them)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", 1))
    rank = int(env.get("RANK", 0))
    local = int(env.get("LOCAL_RANK", rank))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"distributed: RANK={rank} WORLD_SIZE={world} are inconsistent")
    return Dist(rank, world, local)


def init(dist: Dist, timeout_s: float = 24 * 3600) -> None:
    """Join the process group (gloo) when there is more than one process."""
    if dist.world_size == 1:
        return
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group("gloo", rank=dist.rank, world_size=dist.world_size,
                              timeout=timedelta(seconds=timeout_s))


def barrier(dist: Dist) -> None:
    if dist.world_size > 1:
        import torch.distributed as td

        td.barrier()


def broadcast(dist: Dist, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if dist.world_size == 1:
        return value
    import torch.distributed as td

    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def finish(dist: Dist) -> None:
    if dist.world_size > 1:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def device_for(dist: Dist, requested: str | None) -> str:
    """``requested``, else ``cuda:LOCAL_RANK`` when CUDA is there, else ``cpu``."""
    if requested:
        return requested
    import torch

    return f"cuda:{dist.local_rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
