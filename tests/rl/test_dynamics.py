"""DynamicsEnsemble: learns real dynamics, is differentiable, validates its inputs."""

import numpy as np
import pytest
import torch

from rl.dynamics import DynamicsEnsemble
from rl.envs import pointmass_step


def _pointmass_data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(n, 4, generator=gen)
    actions = torch.rand(n, 2, generator=gen) * 2 - 1
    return states, actions, pointmass_step(states, actions)


@pytest.fixture(scope="module")
def fitted():
    model = DynamicsEnsemble(4, 2, n_members=3, hidden_layer_sizes=(32, 32), random_state=0)
    return model.fit(*_pointmass_data(1000, 0), n_epochs=30, batch_size=64, lr=3e-3)


def test_learned_model_approximates_pointmass_twin(fitted):
    states, actions, target = _pointmass_data(300, 1)
    with torch.no_grad():
        error = (fitted(states, actions) - target).pow(2).mean().sqrt()
        no_change = (states - target).pow(2).mean().sqrt()
    assert error < 0.2 * no_change
    assert fitted.n_transitions_ == 1000 and np.isfinite(fitted.train_loss_)


def test_members_differ_and_mean_is_their_average(fitted):
    states, actions, _ = _pointmass_data(20, 2)
    with torch.no_grad():
        members = fitted.predict_members(states, actions)
        assert members.shape == (3, 20, 4)
        torch.testing.assert_close(fitted(states, actions), members.mean(0))
        torch.testing.assert_close(fitted(states, actions, member=1), members[1])
    assert not torch.allclose(members[0], members[1])


def test_prediction_is_differentiable_and_batched(fitted):
    state = torch.zeros(5, 7, 4, requires_grad=True)
    action = torch.full((5, 7, 2), 0.5, requires_grad=True)
    nxt = fitted(state, action)
    assert nxt.shape == (5, 7, 4)
    grad_a, = torch.autograd.grad(nxt[..., 2].sum(), action)
    # pushing harder in x increases vx (true derivative dt = 0.1)
    assert (grad_a[..., 0] > 0.05).all()


def test_fit_is_reproducible_with_random_state():
    data = _pointmass_data(200, 3)
    a = DynamicsEnsemble(4, 2, n_members=2, hidden_layer_sizes=(8,), random_state=5).fit(
        *data, n_epochs=2)
    b = DynamicsEnsemble(4, 2, n_members=2, hidden_layer_sizes=(8,), random_state=5).fit(
        *data, n_epochs=2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_bad_inputs_raise_clear_errors(fitted):
    with pytest.raises(ValueError, match="state_dim"):
        DynamicsEnsemble(0, 2)
    with pytest.raises(ValueError, match="activation"):
        DynamicsEnsemble(4, 2, activation="gelu")
    with pytest.raises(ValueError, match="states of size 4"):
        fitted(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="member"):
        fitted(torch.zeros(4), torch.zeros(2), member=3)
    s, a, _ = _pointmass_data(10, 4)
    with pytest.raises(ValueError, match="NaN"):
        DynamicsEnsemble(4, 2).fit(s, a, torch.full_like(s, float("nan")))
    with pytest.raises(ValueError, match="equal shape"):
        DynamicsEnsemble(4, 2).fit(s, a, s[:5])
