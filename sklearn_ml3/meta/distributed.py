"""Splitting a meta-batch over ``torch.distributed`` ranks.

A meta-gradient over a batch of tasks is a mean, so each rank computes the
tasks of its share and one all-reduce sums the shares. PyTorch's
``DistributedDataParallel`` cannot be used instead: it does not support the
double backward of a meta-gradient.

Every function here also works without a process group (one rank, nothing
to reduce), so callers need no second code path. Anything that evaluates a
batch of independent members (tasks, or the population of an evolution
strategy) splits them with :func:`my_indices` and combines with
:func:`all_reduce_grads` / :func:`all_reduce_sum` or :func:`gather_lists`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_grads",
    "all_reduce_sum",
    "barrier",
    "gather_lists",
    "gather_task_records",
    "is_distributed",
    "is_main_process",
    "my_indices",
    "rank_and_world_size",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0 (the rank that writes files and shows progress)."""
    return rank_and_world_size()[0] == 0


def _share(n: int, rank: int, world_size: int) -> range:
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def my_indices(n: int) -> range:
    """The indices of ``n`` batch members this rank evaluates.

    Contiguous blocks in rank order whose sizes differ by at most one, so
    that concatenating the ranks' results in rank order restores the order
    of a single-process run.

    Raises
    ------
    ValueError
        If there are fewer members than ranks (a rank would sit idle).
    """
    rank, world_size = rank_and_world_size()
    if n < world_size:
        raise ValueError(f"cannot split {n} tasks over {world_size} processes; use at least "
                         "as many tasks per meta-iteration (tasks_per_iter) as processes")
    return _share(n, rank, world_size)


def all_reduce_grads(params) -> None:
    """Sum the ``.grad`` of ``params`` over all ranks, in place.

    One all-reduce of a flat buffer. A parameter without a gradient on this
    rank counts as zeros (and gets the summed gradient).
    """
    params = list(params)
    if not is_distributed() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(value: float, device=None) -> float:
    """The sum of ``value`` over all ranks (``value`` itself without a process group)."""
    if not is_distributed():
        return float(value)
    # float64 so that the sum does not lose digits the single-process mean keeps
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total)


def gather_lists(items: list) -> list:
    """Concatenate every rank's ``items`` (picklable) in rank order, on every rank."""
    if not is_distributed():
        return list(items)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def gather_task_records(records: list, n_tasks: int) -> list:
    """All ranks' per-task records in the order of a single-process run.

    ``records`` are this rank's, one per task of its :func:`my_indices`
    share, iteration after iteration (e.g. statistics of each task-loss
    rollout); the result lists every task of every iteration, on every rank.
    """
    if not is_distributed():
        return list(records)
    world_size = dist.get_world_size()
    parts: list = [None] * world_size
    dist.all_gather_object(parts, list(records))
    sizes = [len(_share(n_tasks, r, world_size)) for r in range(world_size)]
    n_iter = len(parts[0]) // sizes[0]
    return [record for i in range(n_iter) for part, size in zip(parts, sizes, strict=True)
            for record in part[i * size:(i + 1) * size]]


def barrier() -> None:
    """Wait for all ranks (no-op without a process group)."""
    if is_distributed():
        dist.barrier()
