"""Scale-out of a batch on the engines users already have: shares of the inputs for job arrays, ranks for torchrun.

``hsidenoise run 'scenes/*.hdr' -o clean/ --shard K/N`` runs the K-th of N shares of the inputs, so that a Slurm
job array (``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``), GNU parallel or ``xargs -P`` processes a
campaign with no scheduler of ours. A :class:`Shard` is a pure function of the sorted inputs: every process
that sees the same inputs agrees on who does what, every input falls in exactly one share, and since each cube
is denoised on its own, the outputs are the same bytes as one process writes.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) :class:`Ranks` splits the inputs
the same way, one share per rank, each rank on its own GPU (``cuda:LOCAL_RANK``) or on the CPU, and
:class:`RankGroup` gathers every rank's records so that rank 0 alone prints the batch summary. The group only
exchanges those small records (``all_gather_object``), never tensors, so it uses gloo on CPU and GPU nodes alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from hsidenoise.errors import ConfigError

T = TypeVar("T")

RANK_WAIT = timedelta(days=7)
"""How long a rank that finished its share waits for the others (the group's collective timeout)."""

_SHARD_SYNTAX = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` shares of a batch's inputs (``--shard K/N``), numbered from 0.

    Share K holds the inputs at positions K, K + N, K + 2N, ... of the inputs sorted by path: round robin
    rather than contiguous blocks, so that shares differ in size by at most one input and inputs whose names
    sort together (a flight's lines, often of similar size) spread over all shares instead of loading one.

    Attributes:
        index: K, from 0 to ``count - 1`` (a Slurm array ``--array=0-(N-1)`` numbers its tasks so).
        count: N, at least 1.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--shard {self.index}/{self.count}: N must be at least 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"--shard {self.index}/{self.count}: K counts from 0 and must be below N={self.count}; "
                f"pass K in 0..{self.count - 1} (a Slurm array 1-{self.count} needs $((SLURM_ARRAY_TASK_ID - 1)))"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` as typed on the command line (spaces allowed around the numbers).

        Raises:
            ConfigError: not two non-negative integers ``K/N``, N below 1, or K not below N.
        """
        match = _SHARD_SYNTAX.fullmatch(text)
        if match is None:
            raise ConfigError(
                f"--shard {text!r} is not K/N; pass the share number and the share count, e.g. --shard 0/4 "
                "(K from 0 to N-1)"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    def select(self, items: Iterable[T], key: Callable[[T], Any] = str) -> list[T]:
        """The items of this share, in their given order; membership goes by position in ``sorted(key)``.

        Args:
            items: distinct items (their keys distinct too), e.g. the batch's jobs.
            key: what the items are sorted by (default: ``str``, the path).
        """
        items = list(items)
        order = sorted(range(len(items)), key=lambda i: key(items[i]))
        mine = {i for position, i in enumerate(order) if position % self.count == self.index}
        return [item for i, item in enumerate(items) if i in mine]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a ``torchrun`` launch (or any launcher that sets the same variables).

    Attributes:
        rank: this process, 0 to ``world_size - 1`` (``RANK``).
        world_size: the number of processes (``WORLD_SIZE``).
        local_rank: this process on its node (``LOCAL_RANK``): which GPU it takes.
    """

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ranks | None:
        """The ranks described by ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, or None outside a launch.

        A world of one process is no launch (None): it runs as a plain process.

        Raises:
            ConfigError: the variables are set but are not integers, or do not fit together.
        """
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ and "RANK" not in environ:
            return None
        try:
            world_size = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ConfigError(
                "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them); "
                f"got RANK={environ.get('RANK')!r} WORLD_SIZE={environ.get('WORLD_SIZE')!r} "
                f"LOCAL_RANK={environ.get('LOCAL_RANK')!r}"
            ) from None
        if world_size <= 1:
            return None
        if not 0 <= rank < world_size or local_rank < 0:
            raise ConfigError(
                f"RANK={rank} does not fit WORLD_SIZE={world_size} (or LOCAL_RANK={local_rank} is negative); "
                "launch with torchrun, which sets them"
            )
        return cls(rank, world_size, local_rank)

    @property
    def shard(self) -> Shard:
        """This rank's share of the inputs: the same split as ``--shard RANK/WORLD_SIZE``."""
        return Shard(self.rank, self.world_size)

    def device(self, choice: str) -> str:
        """The device of this rank for ``--device choice``: ``cuda:LOCAL_RANK`` (modulo the GPUs this
        process sees, for launchers that give each rank one visible GPU) for ``auto`` and ``cuda`` when torch
        sees a GPU, else ``choice`` itself (``auto`` then picks the CPU, ``cuda`` fails as usual)."""
        if choice not in ("auto", "cuda"):
            return choice
        import torch

        if not torch.cuda.is_available():
            return choice
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


class RankGroup:
    """The process group of a launch, for one thing: gathering every rank's records at the end.

    Enter it after planning (so that every rank has planned before any writes) and before the work;
    :meth:`gather` waits for all ranks (up to :data:`RANK_WAIT`) and returns every rank's records.
    Without ranks (a plain process) it does nothing and :meth:`gather` returns the records as they are.
    """

    def __init__(self, ranks: Ranks | None, *, timeout: timedelta = RANK_WAIT) -> None:
        self.ranks = ranks
        self.timeout = timeout
        self._started = False

    def __enter__(self) -> RankGroup:
        if self.ranks is None:
            return self
        import torch.distributed as dist

        if not dist.is_available():
            raise ConfigError("this torch build has no torch.distributed; run without torchrun, or use --shard K/N")
        if not dist.is_initialized():
            try:
                dist.init_process_group(
                    backend="gloo",
                    init_method="env://",
                    rank=self.ranks.rank,
                    world_size=self.ranks.world_size,
                    timeout=self.timeout,
                )
            except (ValueError, RuntimeError) as error:  # e.g. MASTER_ADDR not set: not a real launch
                raise ConfigError(
                    f"cannot join the other ranks ({' '.join(str(error).split())}); launch with torchrun, "
                    "or unset RANK/WORLD_SIZE to run one process"
                ) from None
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._started = False

    def gather(self, records: list[dict[str, Any]], order: Sequence[object] = ()) -> list[dict[str, Any]]:
        """Every rank's records, on every rank, once all have finished; the records themselves without ranks.

        Args:
            records: this rank's records (JSON-able dicts with an ``input``).
            order: the plan's inputs; when given the records come back in that order (:func:`in_plan_order`),
                as one process would list them, else rank by rank.
        """
        if self.ranks is None:
            gathered = list(records)
        else:
            import torch.distributed as dist

            parts: list[list[dict[str, Any]] | None] = [None] * self.ranks.world_size
            dist.all_gather_object(parts, records)
            dist.barrier()
            gathered = [record for part in parts for record in (part or [])]
        return in_plan_order(gathered, order) if order else gathered

    @property
    def is_main(self) -> bool:
        """Whether this process prints the summary: rank 0, or a plain process."""
        return self.ranks is None or self.ranks.rank == 0


def in_plan_order(records: Sequence[dict[str, Any]], sources: Sequence[object]) -> list[dict[str, Any]]:
    """Records of several processes back in the order of the plan (``sources``: the inputs, in order)."""
    position = {str(source): i for i, source in enumerate(sources)}
    return sorted(records, key=lambda record: position.get(record["input"], len(position)))
