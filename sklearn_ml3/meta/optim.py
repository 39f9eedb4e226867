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
        raise ValueError(f"optimizer (solver) must be one of {SOLVERS}, got {name!r}")


def differentiable_optimizer(name: str, lr: float) -> torchopt.base.GradientTransformation:
    """A functional torchopt optimizer whose updates are differentiable."""
    _check(name)
    if name == "sgd":
        return torchopt.sgd(lr)
    if name == "momentum":
        return torchopt.sgd(lr, momentum=MOMENTUM)
    return torchopt.adam(lr, eps_root=ADAM_EPS_ROOT)


def torch_optimizer_spec(name: str) -> tuple[type[torch.optim.Optimizer], dict]:
    """The ``torch.optim`` class and keyword arguments that take the same steps as
    :func:`differentiable_optimizer` (the form Stable-Baselines3 policies expect)."""
    _check(name)
    if name == "sgd":
        return torch.optim.SGD, {}
    if name == "momentum":
        return torch.optim.SGD, {"momentum": MOMENTUM}
    return torch.optim.Adam, {}


def torch_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer that takes the same steps at meta-test time."""
    optimizer_class, kwargs = torch_optimizer_spec(name)
    return optimizer_class(params, lr=lr, **kwargs)
