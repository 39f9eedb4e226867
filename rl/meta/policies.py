"""Functional MLP policies of :mod:`rl.meta`: one builder, one forward, one initialiser.

The optimizees of the meta-training problems (the goal policies of
:mod:`rl.meta.model_based` and :mod:`rl.meta.shaping`, the Gaussian policy of
:mod:`rl.meta.model_free`, the networks of :mod:`rl.meta.inverse_dynamics`)
are plain ``nn.Sequential`` MLPs built by :func:`build_mlp`. The engine of
:mod:`sklearn_ml3.meta` differentiates through their updates on parameter
dicts, so they are evaluated with :func:`mlp_forward`, a pure function of the
``state_dict``-style dict (also under :func:`torch.func.vmap` over stacked
parameters), and fresh parameters come from :func:`init_params`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sklearn_ml3._utils import build_seeded

Params = dict[str, torch.Tensor]
Activation = str | Callable[[torch.Tensor], torch.Tensor] | None

#: Activations by name: the module of :func:`build_mlp` and the function of :func:`mlp_forward`.
ACTIVATIONS: dict[str, tuple[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = {
    "tanh": (nn.Tanh, torch.tanh),
    "relu": (nn.ReLU, torch.relu),
}


def _lookup(activation: str) -> tuple[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def _function(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if activation is None or callable(activation):
        return activation
    return _lookup(activation)[1]


def build_mlp(n_inputs: int, hidden_sizes: Sequence[int], n_outputs: int,
              activation: str = "tanh",
              init: Callable[[nn.Linear, bool], None] | None = None) -> nn.Sequential:
    """``nn.Sequential(Linear, act, ..., Linear)``: the policy MLP of :func:`mlp_forward`.

    Parameters
    ----------
    n_inputs, n_outputs : int
    hidden_sizes : sequence of int
        Hidden widths (empty: one linear map).
    activation : {"tanh", "relu"}, default="tanh"
        Between the linear layers (the output layer has none).
    init : callable, optional
        ``init(linear, is_output)``, called on each linear layer right after
        it is built (so the random numbers it draws come in the same order as
        when every layer is built and initialised in turn).

    Returns
    -------
    nn.Sequential
        The linear layers are at even indices: parameters ``"0.weight"``,
        ``"0.bias"``, ``"2.weight"``, ... (prefixed by the attribute name
        when the MLP is a submodule).
    """
    module = _lookup(activation)[0]
    layers: list[nn.Module] = []
    width = int(n_inputs)
    for size in hidden_sizes:
        linear = nn.Linear(width, int(size))
        if init is not None:
            init(linear, False)
        layers += [linear, module()]
        width = int(size)
    out = nn.Linear(width, int(n_outputs))
    if init is not None:
        init(out, True)
    layers.append(out)
    return nn.Sequential(*layers)


def n_linear_layers(params: Params, prefix: str = "net") -> int:
    """Linear layers of the MLP ``prefix`` in ``params`` (``{prefix}.0``, ``{prefix}.2``, ...)."""
    head = f"{prefix}." if prefix else ""
    n = 0
    while f"{head}{2 * n}.weight" in params:
        n += 1
    return n


def mlp_forward(params: Params, x: torch.Tensor, activation: Activation = "tanh",
                out_activation: Activation = None, *, prefix: str = "net") -> torch.Tensor:
    """The MLP of :func:`build_mlp` with parameters ``params``, as a pure function.

    Equal to calling the module (``torch.func.functional_call``) without its
    per-call overhead, which dominates the small batches of a rollout, and
    usable under :func:`torch.func.vmap` over stacked parameters.

    Parameters
    ----------
    params : dict of str to Tensor
        ``"{prefix}.{2 i}.weight"`` and ``"{prefix}.{2 i}.bias"`` per linear
        layer ``i`` (other entries are ignored).
    x : Tensor of shape (..., n_inputs)
    activation : {"tanh", "relu"} or callable, default="tanh"
        After every linear layer but the last.
    out_activation : {"tanh", "relu"}, callable or None, default=None
        After the last linear layer (None: linear output).
    prefix : str, default="net"
        Name of the MLP in ``params`` (``""`` for a bare :func:`build_mlp`).

    Notes
    -----
    Stacked parameters (:func:`stack_params`: weights ``(n, out, in)``) without
    :func:`torch.func.vmap` evaluate ``n`` MLPs at once on ``x`` of shape
    ``(..., n, n_inputs)``, row ``i`` of the second-to-last axis through MLP ``i``.
    """
    act, out_act = _function(activation), _function(out_activation)
    head = f"{prefix}." if prefix else ""
    n = n_linear_layers(params, prefix)
    for i in range(n):
        weight, bias = params[f"{head}{2 * i}.weight"], params[f"{head}{2 * i}.bias"]
        if weight.dim() == 3:
            x = torch.einsum("...ni,noi->...no", x, weight) + bias
        else:
            x = F.linear(x, weight, bias)
        if i < n - 1:
            x = act(x)
        elif out_act is not None:
            x = out_act(x)
    return x


def init_params(factory: Callable[[], nn.Module], seed: int | None) -> Params:
    """Fresh detached parameters of ``factory()``, built with torch's RNG seeded by ``seed``.

    The global RNG state is restored afterwards (:func:`sklearn_ml3._utils.build_seeded`);
    ``seed=None`` draws from it.
    """
    module = build_seeded(factory, seed)
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def stack_params(params: Iterable[Params]) -> Params:
    """Parameter dicts stacked along a new leading axis (for :func:`torch.func.vmap`)."""
    params = list(params)
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def unstack_params(params: Params, i: int) -> Params:
    """Entry ``i`` of stacked parameters, detached."""
    return {k: v[i].detach() for k, v in params.items()}


__all__ = [
    "ACTIVATIONS",
    "build_mlp",
    "init_params",
    "mlp_forward",
    "n_linear_layers",
    "stack_params",
    "unstack_params",
]
