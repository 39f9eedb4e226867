"""iLQR trajectory optimisation in torch, on any batched torch dynamics.

Derivatives come from autograd: ``dynamics``/``running_cost`` act row-wise on
a batch, so the Jacobian of the batch sum gives every time step's Jacobian in
one call. Control limits are enforced by optimising an unconstrained ``v``
with ``u = mid + half * tanh(v)``. Levenberg-Marquardt regularisation of
``Q_uu`` and a backtracking line search (all step sizes rolled out as one
batch) make the iteration robust.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RunningCost = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FinalCost = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.001)


@dataclass
class ILQRInfo:
    """Diagnostics of an :func:`ilqr` run.

    Attributes
    ----------
    cost : float
        Final total cost.
    costs : list of float
        Total cost after each iteration (index 0: the initial guess).
    n_iter : int
        Iterations run.
    converged : bool
        Relative improvement fell below ``tol``.
    reg : float
        Final Levenberg-Marquardt regularisation.
    """

    cost: float
    costs: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    reg: float = 0.0


def _jacobians(fn: Callable, x: torch.Tensor, u: torch.Tensor):
    """Per-row Jacobians of a row-wise batched ``fn(x, u) -> (T, m)``: (T, m, nx), (T, m, nu)."""

    def summed(xx: torch.Tensor, uu: torch.Tensor) -> torch.Tensor:
        return fn(xx, uu).sum(0)

    jx, ju = torch.autograd.functional.jacobian(summed, (x, u), vectorize=True)
    return jx.permute(1, 0, 2), ju.permute(1, 0, 2)


def _cost_derivatives(cost: RunningCost, x: torch.Tensor, u: torch.Tensor):
    """Gradients and Hessians of a row-wise cost ``(T,)`` with respect to ``x`` and ``u``."""
    nx = x.shape[-1]

    def grad(xx: torch.Tensor, uu: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xx = xx if xx.requires_grad else xx.requires_grad_(True)
            uu = uu if uu.requires_grad else uu.requires_grad_(True)
            gx, gu = torch.autograd.grad(
                cost(xx, uu).sum(), (xx, uu), create_graph=True, materialize_grads=True
            )
        return torch.cat([gx, gu], -1)

    z = grad(x.detach().clone(), u.detach().clone()).detach()
    hx, hu = _jacobians(grad, x.detach().clone(), u.detach().clone())
    hess = torch.cat([hx, hu], -1)  # (T, nx + nu, nx + nu)
    hess = 0.5 * (hess + hess.transpose(-1, -2))
    return z[:, :nx], z[:, nx:], hess[:, :nx, :nx], hess[:, nx:, nx:], hess[:, nx:, :nx]


class _Squash:
    """Map between bounded controls ``u`` and unconstrained ``v``."""

    def __init__(self, low: torch.Tensor | None, high: torch.Tensor | None) -> None:
        self.bounded = low is not None
        if self.bounded:
            self.mid, self.half = (high + low) / 2, (high - low) / 2

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.mid + self.half * torch.tanh(v) if self.bounded else v

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        if not self.bounded:
            return u
        return torch.atanh(((u - self.mid) / self.half).clamp(-0.999, 0.999))


def ilqr(
    dynamics: Dynamics,
    running_cost: RunningCost,
    final_cost: FinalCost,
    x0: torch.Tensor,
    u_init: torch.Tensor,
    n_iter: int = 50,
    u_low: torch.Tensor | Sequence[float] | float | None = None,
    u_high: torch.Tensor | Sequence[float] | float | None = None,
    reg_init: float = 1.0,
    reg_min: float = 1e-6,
    reg_max: float = 1e10,
    reg_factor: float = 4.0,
    tol: float = 1e-7,
    line_search_steps: Sequence[float] = DEFAULT_STEPS,
) -> tuple[torch.Tensor, torch.Tensor, ILQRInfo]:
    """Optimise an open-loop control sequence with iLQR.

    Parameters
    ----------
    dynamics : callable
        ``dynamics(x, u) -> x_next`` for ``x`` of shape (B, nx), ``u`` of shape
        (B, nu), acting row by row (any function with leading batch dims,
        e.g. :func:`rl.envs.pointmass_step`).
    running_cost : callable
        ``running_cost(x, u) -> (B,)`` cost of each step.
    final_cost : callable
        ``final_cost(x) -> (B,)`` cost of the last state.
    x0 : torch.Tensor of shape (nx,)
    u_init : torch.Tensor of shape (T, nu)
        Initial controls (inside the limits when they are given).
    n_iter : int, default=50
    u_low, u_high : tensor, sequence, float or None
        Control limits, enforced by tanh squashing; give both or neither.
    reg_init, reg_min, reg_max, reg_factor : float
        Levenberg-Marquardt regularisation of ``Q_uu``: start, bounds, and the
        factor it grows by on failure (and shrinks by on success).
    tol : float, default=1e-7
        Stop when the relative cost improvement of an accepted step is below.
    line_search_steps : sequence of float
        Step sizes tried, all in one batched rollout; the best is taken.

    Returns
    -------
    X : torch.Tensor of shape (T + 1, nx)
        States of the optimised rollout.
    U : torch.Tensor of shape (T, nu)
        Optimised controls (within the limits).
    info : ILQRInfo

    Notes
    -----
    Runs in the dtype of ``x0`` (float64 recommended). The cost is evaluated on
    the squashed control, so a control penalty bounds ``v`` only through the
    squashing; LM regularisation keeps the backward pass well posed.
    """
    if (u_low is None) != (u_high is None):
        raise ValueError("give both u_low and u_high, or neither")
    if x0.ndim != 1 or u_init.ndim != 2:
        raise ValueError(f"x0 must be (nx,) and u_init (T, nu), got {x0.shape}, {u_init.shape}")
    dtype, device = x0.dtype, x0.device
    u_init = u_init.to(dtype=dtype, device=device)
    as_t = lambda b: None if b is None else torch.as_tensor(b, dtype=dtype, device=device)  # noqa: E731
    low, high = as_t(u_low), as_t(u_high)
    if low is not None:
        low, high = low.expand(u_init.shape[-1]), high.expand(u_init.shape[-1])
        if torch.any(low >= high):
            raise ValueError("u_low must be below u_high")
    squash = _Squash(low, high)
    n_steps, steps = u_init.shape[0], torch.as_tensor(line_search_steps, dtype=dtype)

    def rollout(v: torch.Tensor, x_ref=None, v_ref=None, k=None, gains=None):
        """Roll out (B, T, nu) unconstrained controls, optionally with feedback; cost (B,)."""
        batch = v.shape[0]
        x = x0.expand(batch, -1)
        xs, vs = [x], []
        cost = torch.zeros(batch, dtype=dtype, device=device)
        for t in range(n_steps):
            vt = v[:, t]
            if gains is not None:
                vt = v_ref[t] + k[:, t] + ((x - x_ref[t]) @ gains[t].T)
            ut = squash(vt)
            cost = cost + running_cost(x, ut)
            x = dynamics(x, ut)
            xs.append(x)
            vs.append(vt)
        cost = cost + final_cost(x)
        return torch.stack(xs, 1), torch.stack(vs, 1), cost

    with torch.no_grad():
        v = squash.inverse(u_init)
        xs, _, cost = rollout(v[None])
        x_traj, j = xs[0], float(cost[0])
    info = ILQRInfo(cost=j, costs=[j], reg=reg_init)
    reg = reg_init
    dyn_v = lambda x, vv: dynamics(x, squash(vv))  # noqa: E731
    cost_v = lambda x, vv: running_cost(x, squash(vv))  # noqa: E731
    eye = torch.eye(u_init.shape[-1], dtype=dtype, device=device)

    for it in range(n_iter):
        info.n_iter = it + 1
        fx, fu = _jacobians(dyn_v, x_traj[:-1], v)
        lx, lu, lxx, luu, lux = _cost_derivatives(cost_v, x_traj[:-1], v)
        xf = x_traj[-1:].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (gf,) = torch.autograd.grad(final_cost(xf).sum(), xf, create_graph=True)
        vx = gf[0].detach()
        vxx = torch.autograd.functional.jacobian(
            lambda z: torch.autograd.grad(final_cost(z).sum(), z, create_graph=True)[0][0],
            xf.detach(),
        )[:, 0]

        # Backward pass; on a non-positive-definite Q_uu raise the regulariser and retry.
        while True:
            ks, gains, ok = [], [], True
            vx_t, vxx_t = vx, 0.5 * (vxx + vxx.T)
            for t in reversed(range(n_steps)):
                qx = lx[t] + fx[t].T @ vx_t
                qu = lu[t] + fu[t].T @ vx_t
                qxx = lxx[t] + fx[t].T @ vxx_t @ fx[t]
                quu = luu[t] + fu[t].T @ vxx_t @ fu[t]
                qux = lux[t] + fu[t].T @ vxx_t @ fx[t]
                chol, err = torch.linalg.cholesky_ex(quu + reg * eye)
                if err.item() != 0:
                    ok = False
                    break
                k = -torch.cholesky_solve(qu[:, None], chol)[:, 0]
                gain = -torch.cholesky_solve(qux, chol)
                vx_t = qx + gain.T @ quu @ k + gain.T @ qu + qux.T @ k
                vxx_t = qxx + gain.T @ quu @ gain + gain.T @ qux + qux.T @ gain
                vxx_t = 0.5 * (vxx_t + vxx_t.T)
                ks.append(k)
                gains.append(gain)
            if ok:
                break
            reg = max(reg * reg_factor, reg_min)
            if reg > reg_max:
                info.reg = reg
                return x_traj, squash(v), info
        k_all = torch.stack(ks[::-1])  # (T, nu)
        gains = torch.stack(gains[::-1])  # (T, nu, nx)

        with torch.no_grad():
            batch_k = steps[:, None, None] * k_all[None]
            xs, vs, costs = rollout(v[None].expand(len(steps), -1, -1), x_traj, v, batch_k, gains)
        costs = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, float("inf")))
        best = int(torch.argmin(costs))
        new_j = float(costs[best])
        if new_j < j:
            improvement = (j - new_j) / max(abs(j), 1e-12)
            x_traj, v, j = xs[best], vs[best], new_j
            reg = max(reg / reg_factor, reg_min)
            info.costs.append(j)
            if improvement < tol:
                info.converged = True
                break
        else:
            reg *= reg_factor
            info.costs.append(j)
            if reg > reg_max:
                break
    info.cost, info.reg = j, reg
    return x_traj.detach(), squash(v).detach(), info
