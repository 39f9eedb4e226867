"""Arm kinematics and frames shared by the model-based and model-free loss features."""

from __future__ import annotations

import torch

from rl.envs.reacher import REACHER_LINKS


def arm_jacobian_t(cos_q: torch.Tensor, sin_q: torch.Tensor, offset: torch.Tensor,
                   links=REACHER_LINKS) -> torch.Tensor:
    """``J(q)^T d``: a fingertip offset ``d`` mapped to joint directions, shape (T, 2).

    ``cos_q`` and ``sin_q`` hold ``(cos q1, cos q2)`` and ``(sin q1, sin q2)``
    per row (``q2`` relative to the first link); ``offset`` the ``(dx, dy)``
    from the fingertip to the goal. ``J^T d`` is minus the joint-space gradient
    of ``|tip - goal|^2 / 2``: the joint motion that moves the fingertip
    towards the goal.
    """
    l1, l2 = links
    c1, c2, s1, s2 = cos_q[:, 0], cos_q[:, 1], sin_q[:, 0], sin_q[:, 1]
    c12, s12 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
    dx, dy = offset[:, 0], offset[:, 1]
    # tip = l1 (c1, s1) + l2 (c12, s12); J = d tip / d (q1, q2)
    g1 = (-l1 * s1 - l2 * s12) * dx + (l1 * c1 + l2 * c12) * dy
    g2 = -l2 * s12 * dx + l2 * c12 * dy
    return torch.stack([g1, g2], -1)


def in_frame(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """2-D vectors ``x`` in the frame of unit vectors ``u``: ``(x.u, x.w)``, ``w`` normal."""
    w = torch.stack([-u[:, 1], u[:, 0]], -1)
    return torch.stack([(x * u).sum(-1), (x * w).sum(-1)], -1)


def _length(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt((x**2).sum(-1, keepdim=True) + eps)


def joint_frame(cos_q: torch.Tensor, sin_q: torch.Tensor, velocity: torch.Tensor,
                offset: torch.Tensor, actions: torch.Tensor,
                links=REACHER_LINKS, outcome=None) -> tuple[torch.Tensor, ...]:
    """Joint-frame loss features of a 2-link arm, one row per time step.

    With ``d`` = ``offset`` (fingertip to goal), ``j = J(q)^T d``
    (:func:`arm_jacobian_t`), ``u = j / |j|`` and ``w`` its normal, returns
    ``(|d|, |j|, (qd.u, qd.w), (a.u, a.w))`` with shapes (T, 1), (T, 1),
    (T, 2), (T, 2): joint velocities and actions seen from the joint direction
    that moves the fingertip towards the goal.

    ``outcome``, the ``(cos q, sin q, offset)`` of the trajectory's final
    state (each of shape (2,)), adds how long until the rollout ends and where
    it ended, before the actions: ``(1 - t / T, |d_T|, (j_T.u, j_T.w))`` with
    ``T`` the number of rows and ``j_T = J(q_T)^T d_T``, the joint motion that
    would move the final fingertip towards the goal, seen from each row's
    frame. Like the other columns, these do not change when the whole problem
    is rotated about the arm's base.
    """
    distance = _length(offset, 1e-6)
    direction = arm_jacobian_t(cos_q, sin_q, offset, links)
    norm = _length(direction, 1e-10)
    u = direction / norm
    rows = [distance, norm, in_frame(u, velocity)]
    if outcome is not None:
        final = [x.expand(len(offset), 2) for x in outcome]
        steps = torch.arange(len(offset), dtype=offset.dtype, device=offset.device)
        rows += [(1 - steps / len(offset))[:, None], _length(final[2], 1e-6),
                 in_frame(u, arm_jacobian_t(*final, links))]
    return (*rows, in_frame(u, actions))
