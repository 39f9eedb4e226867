"""Inner optimizers: differentiable (torchopt functional) for meta-training and
their ordinary ``torch.optim`` twins for meta-test, built from one name."""

from __future__ import annotations

import torch
import torchopt

SOLVERS = ("sgd", "momentum", "adam")
MOMENTUM = 0.9
# Adam needs eps inside the square root: with eps_root=0 the meta-gradient of
# sqrt(v) at v=0 is NaN.
ADAM_EPS_ROOT = 1e-8


def _check(name: str) -> None:
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")


def differentiable_optimizer(name: str, lr: float) -> torchopt.base.GradientTransformation:
    """A functional torchopt optimizer whose updates are differentiable."""
    _check(name)
    if name == "sgd":
        return torchopt.sgd(lr)
    if name == "momentum":
        return torchopt.sgd(lr, momentum=MOMENTUM)
    return torchopt.adam(lr, eps_root=ADAM_EPS_ROOT)


def torch_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer that takes the same steps at meta-test time."""
    _check(name)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    return torch.optim.Adam(params, lr=lr)
