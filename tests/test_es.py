"""Evolution-strategies meta-gradients: the estimator against backprop, and the engine option."""

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sklearn_ml3 import LearnedLoss
from sklearn_ml3.meta import meta_train
from sklearn_ml3.meta.es import antithetic_population, centered_ranks, es_gradient
from tests.test_engine import double_loss, episode, meta_gradient, meta_objective, sine_problem


def test_antithetic_estimate_matches_the_backprop_meta_gradient():
    problem = sine_problem()
    # unfrozen: a hand-written meta-gradient, outside meta_train
    loss = LearnedLoss(hidden_layer_sizes=(4,), activation="tanh",
                       random_state=3).to(torch.float64).requires_grad_(True)
    tasks, params = episode(problem, 2)
    exact = torch.cat([g.flatten() for g in meta_gradient(loss, problem, tasks, params)])
    center = parameters_to_vector(loss.parameters()).detach().clone()
    phis, eps = antithetic_population(center, 300, 1e-3, torch.Generator().manual_seed(0))
    values = []
    for phi in phis:
        with torch.no_grad():
            vector_to_parameters(phi, loss.parameters())
        values.append(float(meta_objective(loss, problem, tasks, params).detach()))
    estimate = es_gradient(torch.tensor(values, dtype=torch.float64), eps, 1e-3, shaping="none")
    cosine = torch.nn.functional.cosine_similarity(estimate, exact, dim=0)
    # relative error ~ sqrt(n_params / n_pairs) = 0.2 (12 parameters): a cosine of ~0.98
    assert cosine > 0.9
    assert float(estimate.norm() / exact.norm()) == pytest.approx(1.0, abs=0.3)


def test_centered_ranks_are_rank_order_in_half_unit_range():
    ranks = centered_ranks(torch.tensor([3.0, -1.0, 10.0, 0.5]))
    assert ranks.tolist() == pytest.approx([1 / 6, -0.5, 0.5, -1 / 6])


def test_es_meta_training_lowers_the_task_loss_and_is_reproducible():
    problem = sine_problem()

    def run():
        loss = double_loss(seed=0)
        history = meta_train(loss, problem, n_meta_iter=20, inner_steps=2, unroll=2,
                             tasks_per_iter=2, inner_lr=0.1, meta_lr=0.03, meta_gradient="es",
                             es_population=8, es_sigma=0.05, random_state=0, verbose=0)
        return loss, history

    loss, history = run()
    again, history_again = run()
    np.testing.assert_array_equal(history, history_again)
    assert loss.meta_info_["meta_gradient"] == "es"
    assert loss.meta_info_["es_population"] == 8
    assert np.mean(history[-5:]) < 0.8 * np.mean(history[:5])


@pytest.mark.parametrize("kwargs, message", [
    ({"meta_gradient": "sgd"}, "meta_gradient must be one of"),
    ({"meta_gradient": "es", "unroll": 1, "inner_steps": 2}, "unroll must equal"),
    ({"meta_gradient": "es", "es_population": 3}, "even number"),
    ({"meta_gradient": "es", "es_sigma": 0.0}, "es_sigma must be > 0"),
])
def test_bad_es_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        meta_train(double_loss(), sine_problem(), n_meta_iter=1, verbose=0, **kwargs)


def test_interrupted_es_meta_training_resumes_exactly(tmp_path):
    """A killed ES run resumes from its checkpoint to the uninterrupted weights: the
    population noise and the task draws continue where they stopped."""
    kwargs = dict(n_meta_iter=12, inner_steps=2, unroll=2, tasks_per_iter=2, inner_lr=0.1,
                  meta_lr=0.03, meta_gradient="es", es_population=4, es_sigma=0.05,
                  random_state=0, verbose=0)
    reference = double_loss(seed=0)
    meta_train(reference, sine_problem(), **kwargs)

    def stop(iteration, value):
        if iteration == 7:
            raise KeyboardInterrupt

    ckpt = tmp_path / "es.ckpt"
    with pytest.raises(KeyboardInterrupt):
        meta_train(double_loss(seed=0), sine_problem(), checkpoint=ckpt, checkpoint_every=5,
                   callback=stop, **kwargs)
    resumed = double_loss(seed=0)
    meta_train(resumed, sine_problem(), checkpoint=ckpt, checkpoint_every=5, **kwargs)
    np.testing.assert_allclose(resumed.meta_history_, reference.meta_history_, rtol=1e-6)
    for x, y in zip(resumed.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)
