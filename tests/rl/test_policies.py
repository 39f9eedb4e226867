"""The functional policy layer of rl.meta: builder, forward, initialiser."""

import pytest
import torch
from torch import nn

from rl.meta.policies import (
    build_mlp,
    init_params,
    mlp_forward,
    n_linear_layers,
    stack_params,
    unstack_params,
)


class Wrapped(nn.Module):
    def __init__(self, hidden=(5, 4), activation="tanh"):
        super().__init__()
        self.net = build_mlp(3, hidden, 2, activation)


@pytest.mark.parametrize("hidden", [(), (6,), (5, 4)])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_functional_forward_equals_the_module(hidden, activation):
    module = Wrapped(hidden, activation)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    params = dict(module.named_parameters())
    assert n_linear_layers(params) == len(hidden) + 1
    assert torch.equal(mlp_forward(params, x, activation), module.net(x))
    assert torch.equal(mlp_forward(params, x, activation, "tanh"), torch.tanh(module.net(x)))
    bare = dict(module.net.named_parameters())
    assert torch.equal(mlp_forward(bare, x, activation, prefix=""), module.net(x))
    functional = torch.func.functional_call(module.net, bare, (x,))
    assert torch.equal(mlp_forward(bare, x, activation, prefix=""), functional)


def test_functional_forward_is_differentiable():
    params = init_params(Wrapped, 0)
    params = {k: v.requires_grad_() for k, v in params.items()}
    mlp_forward(params, torch.ones(2, 3)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_init_params_is_reproducible_by_seed_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = init_params(Wrapped, 3), init_params(Wrapped, 3), init_params(Wrapped, 4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.keys() == {f"net.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert all(not v.requires_grad and v.grad_fn is None for v in a.values())
    torch.manual_seed(3)
    reference = dict(Wrapped().named_parameters())
    assert all(torch.equal(a[k], reference[k]) for k in a)


def test_init_hook_runs_per_layer_in_build_order():
    seen = []

    def init(linear, is_output):
        seen.append((linear.in_features, linear.out_features, is_output))
        if is_output:
            nn.init.zeros_(linear.weight)

    net = build_mlp(3, (5, 4), 2, init=init)
    assert seen == [(3, 5, False), (5, 4, False), (4, 2, True)]
    assert torch.equal(net[4].weight, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="activation"):
        build_mlp(3, (4,), 2, "sigmoid")


def test_vmap_over_stacked_params_equals_a_loop():
    stacked = stack_params(init_params(Wrapped, s) for s in range(4))
    x = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1))
    batched = torch.func.vmap(lambda p, xi: mlp_forward(p, xi, "tanh", "tanh"))(stacked, x)
    looped = torch.stack([mlp_forward(unstack_params(stacked, i), x[i], "tanh", "tanh")
                          for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-6)
    shared = torch.func.vmap(mlp_forward, in_dims=(0, None))(stacked, x[0])
    torch.testing.assert_close(shared[2], mlp_forward(unstack_params(stacked, 2), x[0]),
                               rtol=0, atol=1e-6)


def test_stacked_weights_run_every_policy_on_its_own_rows():
    """Weights of dim 3 are one policy per entry of axis -2 of the input."""
    stacked = stack_params(init_params(Wrapped, s) for s in range(3))
    x = torch.randn(7, 3, 3, generator=torch.Generator().manual_seed(2))  # (time, policy, in)
    out = mlp_forward(stacked, x, "tanh", "tanh")
    assert out.shape == (7, 3, 2)
    for i in range(3):
        torch.testing.assert_close(out[:, i], mlp_forward(unstack_params(stacked, i), x[:, i],
                                                          "tanh", "tanh"), rtol=0, atol=1e-6)


def test_the_meta_policies_use_the_layer():
    from rl.meta.model_based import GoalPolicy, env_spec
    from rl.meta.model_free import GaussianMLPPolicy, policy_mean
    from rl.meta.shaping import TwinPolicy

    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(2))
    gauss = GaussianMLPPolicy(10, 2, (8, 8))
    assert torch.equal(policy_mean(dict(gauss.named_parameters()), x), gauss(x))
    twin = TwinPolicy(10, 2, (8,))
    assert torch.equal(twin(x), torch.tanh(twin.net(x)))
    spec = env_spec("ml3/PointmassGoal-v0")
    goal_policy = GoalPolicy(spec, (8,), action_bound=2.0)
    state, goal = torch.randn(5, spec.state_dim), torch.randn(spec.goal_dim)
    inputs = torch.cat([state, goal.expand(5, -1), goal - state[:, list(spec.position)]], -1)
    assert torch.equal(goal_policy(state, goal), 2.0 * torch.tanh(goal_policy.net(inputs)))
    assert torch.equal(goal_policy.net[-1].bias, torch.zeros(spec.action_dim))
