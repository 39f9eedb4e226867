"""Meta-training split over 2 real gloo processes equals one process.

One ``torch.multiprocessing`` launch runs every scenario on 2 ranks (each
process imports torch once); the same scenarios run in this process as the
single-process reference.
"""

from __future__ import annotations

import datetime
import os
import sys
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sklearn_ml3 import LearnedLoss, MetaLossRegressor, SineTasks, meta_train
from sklearn_ml3.meta import distributed, engine
from sklearn_ml3.tasks import SupervisedProblem

WORLD_SIZE = 2
SINE = SineTasks(amplitude=(0.5, 2.0), phase=(-1.0, 1.0), n_points=20)
TEMPLATE = MetaLossRegressor(hidden_layer_sizes=(8,), lr=0.05)


def _tiny_mlp(n_in, n_out):
    return torch.nn.Sequential(torch.nn.Linear(n_in, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, n_out))


def _new_loss():
    return LearnedLoss(hidden_layer_sizes=(6, 6), random_state=0)


def vmap_meta_fit(tmp_dir, tasks_per_iter=4):
    return _new_loss().meta_fit(SINE, estimator=TEMPLATE, n_meta_iter=6, inner_steps=2,
                                tasks_per_iter=tasks_per_iter, vectorize=True, random_state=1,
                                verbose=0)


def loop_meta_fit_uneven_split(tmp_dir):
    # 3 tasks over 2 ranks: shares of 1 and 2 tasks
    return _new_loss().meta_fit(SINE, estimator=TEMPLATE, n_meta_iter=6, inner_steps=2,
                                tasks_per_iter=3, vectorize=False, grad_clip=0.5,
                                random_state=2, verbose=0)


def meta_train_resumed(tmp_dir):
    problem = SupervisedProblem(SINE, _tiny_mlp)
    kwargs = dict(inner_steps=2, tasks_per_iter=2, inner_lr=0.05, random_state=3, verbose=0)
    if tmp_dir is None:  # the single-process reference runs uninterrupted
        loss = _new_loss()
        meta_train(loss, problem, n_meta_iter=8, **kwargs)
        return loss
    checkpoint = tmp_dir / "meta.ckpt"
    meta_train(_new_loss(), problem, n_meta_iter=4, checkpoint=checkpoint, **kwargs)
    resumed = _new_loss()
    meta_train(resumed, problem, n_meta_iter=8, checkpoint=checkpoint, **kwargs)
    return resumed


def model_free_reacher(tmp_dir):
    from rl.meta.model_free import meta_train_policy_loss

    return meta_train_policy_loss(
        "ml3/ReacherGoal-v0", goals=np.array([[0.1, 0.1], [0.05, -0.15], [-0.1, 0.12]]),
        n_meta_iter=3, tasks_per_iter=2, rollout_episodes=2, horizon=8, batch_size=8,
        rollouts_per_policy=2, loss_hidden_layer_sizes=(16,), random_state=0, verbose=0,
        # the MuJoCo-rollout backprop path: the tasks are split over the ranks
        simulator="env", meta_gradient="backprop", loss_structure="free", features="plain",
        n_epochs=1, inner_optimizer="sgd", inner_lr=0.1)


def model_free_reacher_es(tmp_dir):
    # the default: ES on the batched twin, the population is split over the ranks
    from rl.meta.model_free import meta_train_policy_loss

    return meta_train_policy_loss(
        "ml3/ReacherGoal-v0", goals=np.array([[0.1, 0.1], [0.05, -0.15], [-0.1, 0.12]]),
        n_meta_iter=2, tasks_per_iter=2, rollouts_per_policy=2, n_epochs=1, es_population=4,
        random_state=0, verbose=0)


def model_based_pointmass(tmp_dir):
    # the ranks' real rollouts become everyone's model data before each refit
    from rl.dynamics import DynamicsEnsemble
    from rl.meta.model_based import meta_train_model_based_loss

    return meta_train_model_based_loss(
        "ml3/PointmassGoal-v0", [[1.0, 0.0], [0.5, 0.8], [0.8, -0.5]], n_meta_iter=4,
        inner_steps=2, tasks_per_iter=2, policy_hidden_sizes=(8,), loss_hidden=(8,),
        dynamics=DynamicsEnsemble(4, 2, n_members=2, hidden_layer_sizes=(16,), random_state=0),
        n_random_episodes=2, initial_epochs=2, refit_every=2, refit_epochs=1, random_state=0,
        verbose=0)


SCENARIOS = {f.__name__: f for f in (vmap_meta_fit, loop_meta_fit_uneven_split,
                                     meta_train_resumed, model_free_reacher,
                                     model_free_reacher_es, model_based_pointmass)}


def _forbidden_write(*args, **kwargs):
    raise AssertionError("only rank 0 writes checkpoints")


def _rank_main(rank, out_dir):
    torch.set_num_threads(1)
    # a file rendezvous: no store server lives in rank 0 that could vanish while
    # rank 1 still talks to it; a lost rank fails the run in minutes, not 30
    dist.init_process_group("gloo", init_method=(out_dir / "rendezvous").as_uri(), rank=rank,
                            world_size=WORLD_SIZE, timeout=datetime.timedelta(minutes=3))
    try:
        _run_scenarios(rank, out_dir)
        dist.barrier()  # neither rank tears the group down while the other is in a collective
    except BaseException:
        (out_dir / f"error.rank{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()
    (out_dir / f"done.rank{rank}.txt").write_text("done")
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is on disk: leave without interpreter teardown, where C++ objects
    # torch keeps for the process (threads still joinable) are destroyed in no
    # fixed order; a rank once aborted there ("terminate called without an
    # active exception"), which says nothing about the results under test.
    os._exit(0)


def _run_scenarios(rank, out_dir):
    if rank != 0:
        engine._write_checkpoint = _forbidden_write
    try:  # fewer tasks than processes: a clear error on every rank
        vmap_meta_fit(None, tasks_per_iter=1)
    except ValueError as error:
        (out_dir / f"too_few_tasks.rank{rank}.txt").write_text(str(error))
    for name, scenario in SCENARIOS.items():
        loss = scenario(out_dir)
        torch.save({"phi": loss.network_.state_dict(),
                    "history": torch.as_tensor(loss.meta_history_),
                    "processes": loss.meta_info_["processes"],
                    "rollout_stats": loss.meta_info_.get("rollout_stats")},
                   out_dir / f"{name}.rank{rank}.pt")
    try:  # a checkpoint that only rank 1 can read
        path = out_dir / ("meta.ckpt" if rank == 1 else "missing.ckpt")
        meta_train(_new_loss(), SupervisedProblem(SINE, _tiny_mlp), n_meta_iter=8,
                   inner_steps=2, tasks_per_iter=2, inner_lr=0.05, random_state=3,
                   verbose=0, checkpoint=path)
    except ValueError as error:
        (out_dir / f"unshared_checkpoint.rank{rank}.txt").write_text(str(error))


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    try:  # join=True waits for both processes and raises here if one fails
        mp.start_processes(_rank_main, args=(out_dir,), nprocs=WORLD_SIZE, join=True,
                           start_method="spawn")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
        reports = [f"rank {rank}: " + (
            (out_dir / f"error.rank{rank}.txt").read_text()
            if (out_dir / f"error.rank{rank}.txt").exists()
            else "finished" if (out_dir / f"done.rank{rank}.txt").exists()
            else "no traceback (died in C++ or was killed)") for rank in range(WORLD_SIZE)]
        pytest.fail(f"{error}\n" + "\n".join(reports))
    assert not dist.is_initialized()
    assert [p.name for p in out_dir.iterdir() if p.suffix == ".tmp"] == []
    for rank in range(WORLD_SIZE):
        assert "tasks_per_iter" in (out_dir / f"too_few_tasks.rank{rank}.txt").read_text()
        assert "different iterations [0, 8]" in (
            out_dir / f"unshared_checkpoint.rank{rank}.txt").read_text()
    return {(name, rank): torch.load(out_dir / f"{name}.rank{rank}.pt", weights_only=True)
            for name in SCENARIOS for rank in range(WORLD_SIZE)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_processes_equal_one(two_rank_results, name):
    single = SCENARIOS[name](None)
    assert single.meta_info_["processes"] == 1
    reference = single.network_.state_dict()
    for rank in range(WORLD_SIZE):
        result = two_rank_results[name, rank]
        assert result["processes"] == WORLD_SIZE
        for key, value in reference.items():
            torch.testing.assert_close(result["phi"][key], value, rtol=0, atol=1e-5)
        np.testing.assert_allclose(result["history"].numpy(), single.meta_history_,
                                   rtol=1e-5, atol=1e-6)
        if name == "model_free_reacher":  # statistics of both ranks' rollouts, in order
            assert len(result["rollout_stats"]) == len(single.meta_info_["rollout_stats"])
            np.testing.assert_allclose(
                [s["return"] for s in result["rollout_stats"]],
                [s["return"] for s in single.meta_info_["rollout_stats"]], rtol=1e-5)
    # the weights moved, so equality is not that of two untouched networks
    untouched = LearnedLoss(**single.get_config(),
                            random_state=single.random_state).network_.state_dict()
    assert any(not torch.allclose(reference[k], untouched[k]) for k in reference)


def test_share_of_tasks_without_process_group():
    assert distributed.rank_and_world_size() == (0, 1)
    assert distributed.my_indices(3) == range(3)
    assert distributed.all_reduce_sum(2.5) == 2.5
    assert distributed.gather_task_records([1, 2], 2) == [1, 2]
