"""This process's place in a (possibly single-process) data-parallel training run under ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly single-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls) -> Processes:
        """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1), if any."""
        import torch
        import torch.distributed as dist

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)

    def device(self) -> torch.device:
        import torch

        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def broadcast_flags(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Rank 0's decisions (checkpoint now, stop now) for every rank."""
        if self.world_size == 1:
            return flags
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(f) for f in flags], device=device)
        dist.broadcast(tensor, src=0)
        return [bool(v) for v in tensor.tolist()]

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (on every rank)."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

