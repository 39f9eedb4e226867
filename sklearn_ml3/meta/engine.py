"""The one meta-training engine of sklearn-ml3.

A meta-training run alternates, for a batch of tasks,

1. ``unroll`` differentiable inner steps ``theta <- update(theta, grad M_phi)``
   on the learned loss ``M_phi`` (SGD, momentum or Adam through torchopt's
   functional API),
2. a task loss ``L_T(theta_new, task)`` on the updated optimizee, whose
   gradient flows back through the inner steps into ``phi``,
3. one Adam step on ``phi``.

``theta`` keeps training for ``inner_steps`` steps and is then re-initialised
on new tasks: the practical scheme of the paper (``phi`` updated after each
inner step, ``theta`` reset after M steps). ``unroll > 1`` differentiates
through several steps at once.

Everything task-specific lives in a :class:`MetaProblem`: supervised
regression and classification, shaping terms, model-based and model-free RL
are all problems for this same loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import optree
import torch
import torchopt
from tqdm.auto import tqdm

from .._utils import atomic_write, versions
from . import distributed
from .es import es_meta_gradient
from .optim import differentiable_optimizer

Params = dict[str, torch.Tensor]
#: How :func:`meta_train` estimates the meta-gradient.
META_GRADIENTS = ("backprop", "es")


class MetaTrainingDiverged(RuntimeError):
    """Raised when the task loss or the meta-gradient becomes NaN or infinite.

    The :class:`~sklearn_ml3.LearnedLoss` keeps the last loss network that
    produced a finite task loss, and its ``meta_history_`` up to that point.
    """


@runtime_checkable
class MetaProblem(Protocol):
    """What the engine needs to know about a family of tasks.

    Tasks are whatever :meth:`sample_tasks` returns; with ``vectorizable =
    True`` they must be pytrees of tensors of equal shapes (e.g. a
    :class:`~sklearn_ml3.tasks.Task` named tuple) so that the engine can
    ``torch.func.vmap`` over them.
    """

    #: Whether the problem's functions are pure tensor functions of
    #: ``(params, task)`` that ``torch.func.vmap`` can batch.
    vectorizable: bool

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` tasks for one meta-training episode."""

    def init_params(self, task: Any, seed: int) -> Params:
        """Fresh optimizee parameters ``theta`` (detached tensors)."""

    def loss_inputs(self, params: Params, task: Any) -> tuple[torch.Tensor, ...]:
        """Inputs of the learned loss for the optimizee ``params`` on ``task``."""

    def task_loss(self, params: Params, task: Any) -> torch.Tensor:
        """Scalar task loss of the updated optimizee; may read meta-train-only info."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description stored in the loss's ``meta_info_``."""


@dataclass
class _Episode:
    """Optimizee state of the tasks currently being trained."""

    tasks: Any  # list of tasks, or their stacked pytree in vectorised mode
    params: Any  # list of Params, or stacked Params
    opt_states: Any


def _inner_steps_autograd(loss, problem, optimizer, params, state, task, n_steps):
    for _ in range(n_steps):
        value = loss(*problem.loss_inputs(params, task))
        names = list(params)
        grads = torch.autograd.grad(value, [params[k] for k in names], create_graph=True)
        grads = dict(zip(names, grads, strict=True))
        updates, state = optimizer.update(grads, state, params=params, inplace=False)
        params = torchopt.apply_updates(params, updates, inplace=False)
    return params, state


def _inner_steps_functional(loss, problem, optimizer, params, state, task, n_steps):
    for _ in range(n_steps):
        grads = torch.func.grad(lambda p: loss(*problem.loss_inputs(p, task)))(params)
        updates, state = optimizer.update(grads, state, params=params, inplace=False)
        params = torchopt.apply_updates(params, updates, inplace=False)
    return params, state


def update_and_task_loss(loss, problem, optimizer, params, opt_states, tasks, *, unroll=1,
                         vectorize=False):
    """``unroll`` inner steps on the learned loss for each task, then the mean task loss.

    The returned task loss is differentiable w.r.t. the loss network's
    parameters; its gradient is the meta-gradient.

    Parameters
    ----------
    params, opt_states, tasks
        Lists (one entry per task), or with ``vectorize=True`` pytrees
        stacked along a leading task axis.

    Returns
    -------
    task_loss : Tensor
    params, opt_states
        The updated optimizee parameters and optimizer states, same layout.
    """
    if vectorize:
        def one_task(p, s, t):
            p, s = _inner_steps_functional(loss, problem, optimizer, p, s, t, unroll)
            return problem.task_loss(p, t), p, s

        losses, params, opt_states = torch.func.vmap(one_task)(params, opt_states, tasks)
        return losses.mean(), params, opt_states
    results = [
        _inner_steps_autograd(loss, problem, optimizer, p, s, t, unroll)
        for p, s, t in zip(params, opt_states, tasks, strict=True)
    ]
    params = [r[0] for r in results]
    opt_states = [r[1] for r in results]
    losses = [problem.task_loss(p, t) for p, t in zip(params, tasks, strict=True)]
    return torch.stack(losses).mean(), params, opt_states



def _detach(tree, requires_grad=False):
    def leaf(t):
        if not isinstance(t, torch.Tensor):
            return t
        t = t.detach()
        return t.requires_grad_() if requires_grad and t.is_floating_point() else t

    return optree.tree_map(leaf, tree)


def _stack(trees):
    return optree.tree_map(lambda *xs: torch.stack(xs), *trees)


def meta_train(
    loss,
    problem: MetaProblem,
    *,
    n_meta_iter: int = 500,
    inner_steps: int = 1,
    unroll: int = 1,
    tasks_per_iter: int = 1,
    inner_optimizer: str = "sgd",
    inner_lr: float = 1e-3,
    meta_lr: float = 1e-3,
    grad_clip: float | None = None,
    vectorize: bool | str = "auto",
    meta_gradient: str = "backprop",
    es_population: int = 32,
    es_sigma: float = 0.02,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    random_state=None,
    verbose: int = 1,
    callback=None,
):
    """Meta-train ``loss`` (a :class:`~sklearn_ml3.LearnedLoss`) on ``problem``.

    Parameters
    ----------
    loss : LearnedLoss
        Trained in place; its ``meta_history_`` and ``meta_info_`` are set.
    problem : MetaProblem
        The task family.
    n_meta_iter : int, default=500
        Number of updates of ``phi`` (meta-iterations).
    inner_steps : int, default=1
        Steps an optimizee trains before it is re-initialised (the paper's M).
    unroll : int, default=1
        Inner steps differentiated through per meta-gradient (K); must divide
        ``inner_steps``.
    tasks_per_iter : int, default=1
        Tasks whose task losses are averaged in one meta-gradient.
    inner_optimizer : {"sgd", "momentum", "adam"}, default="sgd"
    inner_lr : float, default=1e-3
    meta_lr : float, default=1e-3
        Adam learning rate for ``phi``.
    grad_clip : float, optional
        Clip the meta-gradient's global norm.
    vectorize : bool or "auto", default="auto"
        Batch tasks with ``torch.func.vmap`` (needs ``problem.vectorizable``);
        "auto" does so when there are at least 2 tasks per iteration.
    meta_gradient : {"backprop", "es"}, default="backprop"
        ``"backprop"`` differentiates the task loss through ``unroll`` inner
        steps. ``"es"`` (:mod:`sklearn_ml3.meta.es`) scores ``es_population``
        perturbed losses ``phi +- es_sigma * eps`` (antithetic pairs) by the
        task loss after a whole inner run of ``inner_steps`` steps on fresh
        optimizees and estimates the gradient from them: no short-horizon
        bias, no derivative of the inner run needed. Every meta-iteration then
        starts fresh optimizees, and ``unroll`` must equal ``inner_steps``.
    es_population : int, default=32
        Members (an even number) per ES meta-gradient.
    es_sigma : float, default=0.02
        Standard deviation of the ES perturbations of ``phi``.
    checkpoint : path, optional
        File to save progress to every ``checkpoint_every`` iterations (at the
        next optimizee reset) and at the end. If it exists, training resumes
        from it and continues exactly as an uninterrupted run would (also
        with another number of processes). The checkpoint records a
        fingerprint of the run (loss shape, options, tasks, seed) and a
        different run is refused with an error naming the difference; a larger
        ``n_meta_iter`` extends a run. A lock file ``<checkpoint>.lock`` keeps
        a second process (another run) off the same checkpoint. The elapsed
        meta-training time is kept across resumes.
    random_state : int, Generator or None
        Seeds task draws and optimizee initialisations.
    verbose : int, default=1
        0 silences the progress bar.
    callback : callable, optional
        ``callback(iteration, task_loss)`` after every meta-iteration.

    Returns
    -------
    history : ndarray of shape (n_meta_iter,)
        The task loss at every meta-iteration.

    Raises
    ------
    MetaTrainingDiverged
        If the task loss or meta-gradient becomes non-finite. A loss that
        diverges before its first finite iteration is left as it was (not
        marked meta-trained).

    Notes
    -----
    Under an initialised ``torch.distributed`` process group (e.g. a script
    launched by ``torchrun``), every rank draws the same ``tasks_per_iter``
    tasks, trains its contiguous share of them
    (:func:`~sklearn_ml3.meta.distributed.my_indices`), and one all-reduce
    sums the meta-gradient shares: every rank takes the same step on ``phi``
    and the result equals a single-process run with the same
    ``random_state``. All ranks must call ``meta_train`` with the same
    arguments; only rank 0 shows progress and writes the checkpoint, which
    all ranks resume from.
    """
    if inner_steps < 1 or unroll < 1 or inner_steps % unroll:
        raise ValueError(
            f"inner_steps ({inner_steps}) must be a positive multiple of unroll ({unroll})"
        )
    if n_meta_iter < 1 or tasks_per_iter < 1:
        raise ValueError("n_meta_iter and tasks_per_iter must be at least 1")
    if meta_gradient not in META_GRADIENTS:
        raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {meta_gradient!r}")
    es = meta_gradient == "es"
    if es and unroll != inner_steps:
        raise ValueError("meta_gradient='es' scores whole inner runs: unroll must equal "
                         f"inner_steps, got unroll={unroll}, inner_steps={inner_steps}")
    if es and not es_sigma > 0:
        raise ValueError(f"es_sigma must be > 0, got {es_sigma}")
    if vectorize == "auto":
        vectorize = bool(problem.vectorizable) and tasks_per_iter > 1
    elif vectorize and not problem.vectorizable:
        raise ValueError(f"{type(problem).__name__} cannot be vectorised; use vectorize=False")

    options = {
        "n_meta_iter": int(n_meta_iter), "inner_steps": int(inner_steps), "unroll": int(unroll),
        "tasks_per_iter": int(tasks_per_iter), "inner_optimizer": inner_optimizer,
        "inner_lr": float(inner_lr), "meta_lr": float(meta_lr),
        "grad_clip": None if grad_clip is None else float(grad_clip),
    }
    if es:  # recorded only when used, so that older checkpoints still resume
        options.update(meta_gradient="es", es_population=int(es_population),
                       es_sigma=float(es_sigma))
    optimizer = differentiable_optimizer(inner_optimizer, inner_lr)
    meta_params = list(loss.parameters())
    meta_optimizer = torch.optim.Adam(meta_params, lr=meta_lr)
    fingerprint = _run_fingerprint(loss, problem, options, random_state)
    rng = np.random.default_rng(random_state)
    history: list[float] = []
    start = 0
    with contextlib.ExitStack() as run:
        if checkpoint is not None:
            if distributed.is_main_process():  # the writer; other ranks only read
                run.enter_context(_checkpoint_lock(checkpoint))
            if Path(checkpoint).exists():
                start = _load_checkpoint(checkpoint, loss, meta_optimizer, rng, history,
                                         fingerprint, n_meta_iter)
            starts = distributed.gather_lists([start])
            if len(set(starts)) > 1:
                raise ValueError(f"the processes would resume {checkpoint} at different "
                                 f"iterations {starts}: put the checkpoint where every process "
                                 "can read it")
        return _meta_train_loop(
            loss, problem, optimizer, meta_optimizer, meta_params, rng, history, start,
            options=options, fingerprint=fingerprint, vectorize=vectorize,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, verbose=verbose,
            callback=callback)


def _meta_train_loop(loss, problem, optimizer, meta_optimizer, meta_params, rng, history,
                     start, *, options, fingerprint, vectorize, checkpoint, checkpoint_every,
                     verbose, callback):
    n_meta_iter, tasks_per_iter = options["n_meta_iter"], options["tasks_per_iter"]
    inner_steps, unroll, grad_clip = options["inner_steps"], options["unroll"], options["grad_clip"]
    es = options.get("meta_gradient") == "es"
    # ES splits its population over ranks instead of the tasks
    mine = range(tasks_per_iter) if es else distributed.my_indices(tasks_per_iter)
    # this rank's share of the mean task loss (its gradient, summed over ranks, is the mean's)
    share = len(mine) / tasks_per_iter

    def new_episode() -> _Episode:
        # every rank draws all tasks and seeds, so that the rng stays in step
        tasks = problem.sample_tasks(tasks_per_iter, rng)
        seeds = rng.integers(0, 2**31 - 1, size=len(tasks))
        tasks, seeds = [tasks[i] for i in mine], seeds[mine.start:mine.stop]
        params = [problem.init_params(t, int(s)) for t, s in zip(tasks, seeds, strict=True)]
        states = [optimizer.init(p) for p in params]
        if vectorize:
            return _Episode(_stack(tasks), _stack(params), _stack(states))
        return _Episode(tasks, [_detach(p, True) for p in params], states)

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    previous_time = loss.meta_info_.get("meta_train_time_s", {"wall": 0.0, "cpu": 0.0})

    def elapsed():
        return {"wall": previous_time["wall"] + time.perf_counter() - t_wall,
                "cpu": previous_time["cpu"] + time.process_time() - t_cpu}

    def save(iteration):
        _save_checkpoint(checkpoint, loss, meta_optimizer, rng, history, options, fingerprint,
                         iteration, elapsed())

    episode: _Episode | None = None
    last_good = None
    phase = 0  # inner steps taken by the current optimizees
    last_saved = start
    loss._set_meta_training(True)  # phi is frozen outside meta-training
    bar = tqdm(total=n_meta_iter, initial=start,
               disable=not verbose or not distributed.is_main_process(), desc="meta-train",
               leave=verbose > 1, dynamic_ncols=True)
    try:
        for iteration in range(start, n_meta_iter):
            if phase == 0:
                if checkpoint is not None and iteration - last_saved >= checkpoint_every:
                    save(iteration)
                    last_saved = iteration
                if not es:
                    episode = new_episode()
            meta_optimizer.zero_grad(set_to_none=True)
            if es:
                value = es_meta_gradient(
                    loss, problem, problem.sample_tasks(tasks_per_iter, rng), rng,
                    population=options["es_population"], sigma=options["es_sigma"],
                    inner_steps=inner_steps,
                    optimizer=optimizer, run_inner=_inner_steps_functional)
            else:
                task_loss, params, states = update_and_task_loss(
                    loss, problem, optimizer, episode.params, episode.opt_states,
                    episode.tasks, unroll=unroll, vectorize=vectorize)
                if task_loss.requires_grad:
                    (task_loss * share).backward()
                distributed.all_reduce_grads(meta_params)
                value = distributed.all_reduce_sum(float(task_loss.detach()) * share,
                                                   device=meta_params[0].device)
            grad_norm = _grad_norm(meta_params)
            if not (math.isfinite(value) and math.isfinite(grad_norm)):
                if last_good is not None:
                    loss.network_.load_state_dict(last_good)
                raise MetaTrainingDiverged(
                    f"meta-training diverged at iteration {iteration}: task loss {value}, "
                    f"meta-gradient norm {grad_norm}. The loss keeps the network of the last "
                    "finite iteration; try a smaller inner_lr or meta_lr, or set grad_clip."
                )
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(meta_params, grad_clip)
            # phi as it was when it gave a finite task loss, restored on divergence
            last_good = {k: v.detach().clone() for k, v in loss.network_.state_dict().items()}
            meta_optimizer.step()
            history.append(value)
            if not es:
                episode.params = _detach(params, requires_grad=not vectorize)
                episode.opt_states = _detach(states)
            phase = (phase + unroll) % inner_steps
            bar.update(1)
            if verbose and (iteration % 10 == 0 or iteration == n_meta_iter - 1):
                bar.set_postfix(task_loss=f"{value:.4g}")
            if callback is not None:
                callback(iteration, value)
    finally:
        loss._set_meta_training(False)
        bar.close()
        if history:  # a run without one finite iteration leaves the loss as it was
            _record(loss, problem, options, history, elapsed(), vectorize)
    if checkpoint is not None:
        save(n_meta_iter)
    return loss.meta_history_


def _grad_norm(params) -> float:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.cat(grads)))


def _record(loss, problem, options, history, time_s, vectorized):
    loss.meta_history_ = np.asarray(history, dtype=np.float64)
    loss.meta_info_ = {
        "input_kind": loss.kind,
        **options,
        "n_meta_iter_done": len(history),
        "vectorized": bool(vectorized),
        "processes": distributed.rank_and_world_size()[1],
        "problem": problem.describe(),
        "meta_train_time_s": time_s,
        "versions": versions(),
    }


# ----------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "sklearn-ml3.meta-checkpoint"


def _digest(tree) -> str:
    """SHA-256 of the tensors and arrays in a pytree (shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for leaf in optree.tree_leaves(tree, none_is_leaf=True):
        if isinstance(leaf, torch.Tensor):
            leaf = leaf.detach().cpu().numpy()
        if isinstance(leaf, np.ndarray):
            digest.update(f"{leaf.dtype}{leaf.shape}".encode())
            digest.update(np.ascontiguousarray(leaf).tobytes())
        else:
            digest.update(repr(leaf).encode())
    return digest.hexdigest()


def _run_fingerprint(loss, problem, options, random_state) -> dict[str, Any]:
    """What makes two meta-training runs the same run (``n_meta_iter`` may grow)."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        seed = None if random_state is None else int(random_state)
    else:  # a Generator or RandomState: its state at the start of the run
        seed = _digest(np.random.default_rng(random_state).bit_generator.state)
    fixed_tasks = getattr(problem, "tasks", None)
    # what a problem measures while it runs (e.g. batch sizes seen) is not a setting
    observed = set(getattr(problem, "observed_keys", ()))
    description = {k: v for k, v in problem.describe().items() if k not in observed}
    return {
        "loss_config": loss.get_config(),
        "options": {k: v for k, v in options.items() if k != "n_meta_iter"},
        "problem": json.loads(json.dumps(description, default=repr)),
        "tasks": _digest(fixed_tasks) if isinstance(fixed_tasks, (list, tuple)) else None,
        "random_state": seed,
    }


def _differences(saved: dict, now: dict, prefix="") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "<absent>"), now.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


@contextlib.contextmanager
def _checkpoint_lock(path):
    """Hold ``<path>.lock`` (``flock``) for the run; the kernel releases it if the process dies."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): run unlocked
        yield
        return
    lock_path = Path(str(path) + ".lock")
    try:
        handle = open(lock_path, "a+")  # noqa: SIM115 (held for the whole run)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot use checkpoint {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RuntimeError(
                f"checkpoint {path} is in use by {holder}; two runs must not share a "
                "checkpoint (wait for it or give this run another path)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def _save_checkpoint(path, loss, meta_optimizer, rng, history, options, fingerprint, iteration,
                     time_s):
    """Rank 0 writes; the other ranks wait until the file is complete."""
    if distributed.is_main_process():
        _write_checkpoint(path, loss, meta_optimizer, rng, history, options, fingerprint,
                          iteration, time_s)
    distributed.barrier()


def _write_checkpoint(path, loss, meta_optimizer, rng, history, options, fingerprint,
                      iteration, time_s):
    state = {
        "format": CHECKPOINT_FORMAT,
        "iteration": int(iteration),
        "options": json.dumps(options),
        "fingerprint": json.dumps(fingerprint),
        "loss_config": json.dumps(loss.get_config()),
        "phi": {k: v.detach().cpu() for k, v in loss.network_.state_dict().items()},
        "meta_optimizer": meta_optimizer.state_dict(),
        "rng_state": json.dumps(rng.bit_generator.state),
        "history": torch.tensor(history, dtype=torch.float64),
        "time": json.dumps(time_s),
    }
    # never leave a half-written checkpoint behind
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path, loss, meta_optimizer, rng, history, fingerprint, n_meta_iter) -> int:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ValueError(f"cannot read meta-training checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a sklearn-ml3 meta-training checkpoint")
    if json.loads(state["loss_config"]) != loss.get_config():
        raise ValueError(f"checkpoint {path} belongs to a loss of another shape")
    if "fingerprint" in state:
        saved = json.loads(state["fingerprint"])
    else:  # checkpoints written before the fingerprint: options and shape only
        saved = {"options": {k: v for k, v in json.loads(state["options"]).items()
                             if k != "n_meta_iter"}}
        fingerprint = {k: fingerprint[k] for k in saved}
    differences = _differences(saved, fingerprint)
    if differences:
        raise ValueError(
            f"checkpoint {path} was written by another run with other meta-training options "
            f"({'; '.join(differences)}); remove it or resume with the same settings")
    if int(state["iteration"]) > n_meta_iter:
        raise ValueError(
            f"checkpoint {path} is at iteration {state['iteration']}, past n_meta_iter="
            f"{n_meta_iter}; resume with n_meta_iter >= {state['iteration']}")
    with torch.no_grad():
        loss.network_.load_state_dict(state["phi"])
    meta_optimizer.load_state_dict(state["meta_optimizer"])
    rng.bit_generator.state = json.loads(state["rng_state"])
    history.extend(state["history"].tolist())
    loss.meta_info_["meta_train_time_s"] = json.loads(state["time"])
    return int(state["iteration"])
