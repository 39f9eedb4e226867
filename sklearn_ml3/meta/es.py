"""Evolution-strategies meta-gradients: a loss scored on whole inner training runs.

Backpropagating through a few inner steps gives a meta-gradient with a short-
horizon bias: it rewards what helps the next step, not the end of training.
Evolution strategies (as EPG and LPO use for learned RL objectives) instead
score perturbed losses ``phi + sigma * eps`` by the task loss *after a whole
inner run* and estimate the gradient of its mean from antithetic pairs,

``g = 1 / (2 sigma n) sum_i (L(phi + sigma eps_i) - L(phi - sigma eps_i)) eps_i``,

which needs no derivative of the inner run at all. Every member of a
population trains the same fresh optimizees on the same tasks (common random
numbers), so their differences come from the loss alone.

:func:`~sklearn_ml3.meta.meta_train` uses this with ``meta_gradient="es"``;
a problem that can score many losses at once (e.g. on a batched simulator)
provides ``population_task_loss(loss, phis, tasks, rng, *, optimizer,
inner_steps)``, otherwise each member runs the engine's own inner steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from . import distributed

FITNESS_SHAPINGS = ("centered_ranks", "none")


def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of ``values`` mapped to ``[-0.5, 0.5]`` (robust to outlying task losses)."""
    ranks = torch.empty_like(values)
    ranks[torch.argsort(values)] = torch.arange(len(values), dtype=values.dtype)
    return ranks / max(len(values) - 1, 1) - 0.5


def antithetic_population(center: torch.Tensor, n_pairs: int, sigma: float,
                          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phis, eps)``: rows ``center + sigma * eps_i`` then ``center - sigma * eps_i``."""
    eps = torch.randn(n_pairs, center.numel(), generator=generator, dtype=center.dtype)
    return torch.cat([center + sigma * eps, center - sigma * eps]), eps


def es_gradient(task_losses: torch.Tensor, eps: torch.Tensor, sigma: float,
                shaping: str = "centered_ranks") -> torch.Tensor:
    """Antithetic estimate of the gradient of the mean task loss w.r.t. ``phi``.

    ``task_losses`` holds the ``2 n`` members in the order of
    :func:`antithetic_population`. With ``shaping="none"`` this is the plain
    finite-difference estimator (unbiased for the Gaussian-smoothed loss);
    ``"centered_ranks"`` replaces the losses by their centred ranks first.
    """
    if shaping not in FITNESS_SHAPINGS:
        raise ValueError(f"shaping must be one of {FITNESS_SHAPINGS}, got {shaping!r}")
    values = centered_ranks(task_losses) if shaping == "centered_ranks" else task_losses
    n = len(eps)
    diff = values[:n] - values[n:]
    return (diff[:, None] * eps).sum(0) / (2 * sigma * n)


def _engine_task_losses(loss, problem, phis, tasks, rng, inner_steps, optimizer, run_inner):
    """Each member trains fresh optimizees with the engine's inner steps (no graph kept)."""
    seeds = rng.integers(0, 2**31 - 1, size=len(tasks))
    center = parameters_to_vector(loss.parameters()).detach().clone()
    values = []
    try:
        for phi in phis:
            with torch.no_grad():
                vector_to_parameters(phi, loss.parameters())
            member = []
            for task, seed in zip(tasks, seeds, strict=True):
                params = problem.init_params(task, int(seed))
                with torch.no_grad():  # run_inner takes its own gradients (torch.func)
                    params, _ = run_inner(loss, problem, optimizer, params,
                                          optimizer.init(params), task, inner_steps)
                    member.append(float(problem.task_loss(params, task)))
            values.append(np.mean(member))
    finally:
        with torch.no_grad():
            vector_to_parameters(center, loss.parameters())
    return torch.tensor(values, dtype=center.dtype)


def es_meta_gradient(loss, problem, tasks, rng: np.random.Generator, *, population: int,
                     sigma: float, inner_steps: int, optimizer, run_inner,
                     shaping: str = "centered_ranks") -> float:
    """Write an ES meta-gradient into ``loss``'s parameters' ``.grad``; return the mean loss.

    ``population`` members (antithetic pairs, so an even number) are scored
    on ``tasks``; under an initialised ``torch.distributed`` process group the
    members are split across ranks and their task losses gathered, so every
    rank computes the same gradient.
    """
    if population < 2 or population % 2:
        raise ValueError(f"es_population must be an even number >= 2, got {population}")
    meta_params = list(loss.parameters())
    center = parameters_to_vector(meta_params).detach()
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    phis, eps = antithetic_population(center, population // 2, sigma, generator)
    member_rng = np.random.default_rng(rng.integers(2**63 - 1))
    mine = distributed.my_indices(len(phis))
    members = phis[mine.start:mine.stop]
    if hasattr(problem, "population_task_loss"):
        local = problem.population_task_loss(loss, members, tasks, member_rng,
                                             optimizer=optimizer, inner_steps=inner_steps)
    else:
        local = _engine_task_losses(loss, problem, members, tasks, member_rng, inner_steps,
                                    optimizer, run_inner)
    task_losses = torch.tensor(distributed.gather_lists(local.tolist()), dtype=center.dtype)
    grad = es_gradient(task_losses, eps, sigma, shaping)
    offset = 0
    for p in meta_params:
        p.grad = grad[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return float(task_losses.mean())
