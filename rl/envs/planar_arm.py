"""Differentiable torch twin of planar 2-link arms (the ``arm2`` model and Reacher).

A planar 2-link arm with centres of mass on the link axes has

``M(q) = [[a + 2 h(q2), c + h(q2)], [c + h(q2), d]]``, ``h = b cos q2 + e sin q2``,

Coriolis/centrifugal torques ``h'(q2) * [2 qd1 qd2 + qd2^2, -qd1^2]`` with
``h' = dh/dq2``, gravity ``[P1 cos q1 + P2 cos(q1 + q2), P2 cos(q1 + q2)]`` in
the plane, and viscous damping. :meth:`PlanarArmParams.from_mujoco` identifies
these constants exactly from a MuJoCo model's mass matrix and bias forces, so
the twin uses the same parameters as the MJCF (checked in the tests).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import torch

from rl.envs.arm import ArmModel


@dataclass(frozen=True)
class PlanarArmParams:
    """Constants of a planar 2-link arm (see the module docstring).

    Attributes
    ----------
    a, b, c, d, e : float
        Mass-matrix constants (armature included in ``a``/``d``).
    p1, p2 : float
        Gravity torque constants (N m); zero for a horizontal arm.
    damping : tuple of float
        Viscous damping of each joint.
    gear : tuple of float
        Torque per unit action; actions are clamped to ``[-1, 1]``.
    link_lengths : tuple of float
        Shoulder-elbow and elbow-tip lengths, for :func:`planar_arm_fingertip`.
    dt : float
        Integration step of the simulator (s).
    substeps : int
        Simulator steps per control step (``frame_skip``).
    """

    a: float
    b: float
    c: float
    d: float
    e: float
    p1: float
    p2: float
    damping: tuple[float, float]
    gear: tuple[float, float]
    link_lengths: tuple[float, float]
    dt: float
    substeps: int

    @classmethod
    def from_mujoco(
        cls, model: mujoco.MjModel, link_lengths: tuple[float, float], substeps: int = 1
    ) -> PlanarArmParams:
        """Identify the constants from the first two DoFs of a MuJoCo model.

        Uses the mass matrix at ``q2 = 0, pi/2, pi`` and the bias forces at
        rest at ``q = 0``; other DoFs (e.g. Reacher's target slides) are left
        at zero and must be dynamically decoupled from the arm.
        """
        m = model
        d = mujoco.MjData(m)
        full = np.zeros((m.nv, m.nv))

        def mass(q2: float) -> np.ndarray:
            d.qpos[:] = 0
            d.qpos[1] = q2
            mujoco.mj_fwdPosition(m, d)
            mujoco.mj_fullM(m, d, full)
            return full[:2, :2].copy()

        m0, m90, m180 = mass(0.0), mass(np.pi / 2), mass(np.pi)
        c = (m0[0, 1] + m180[0, 1]) / 2
        b = (m0[0, 1] - m180[0, 1]) / 2
        e = m90[0, 1] - c
        a = m0[0, 0] - 2 * b
        d.qpos[:], d.qvel[:] = 0, 0
        mujoco.mj_forward(m, d)
        bias0 = d.qfrc_bias[:2] - d.qfrc_passive[:2]
        return cls(
            a=float(a),
            b=float(b),
            c=float(c),
            d=float(m0[1, 1]),
            e=float(e),
            p1=float(bias0[0] - bias0[1]),
            p2=float(bias0[1]),
            damping=tuple(float(x) for x in m.dof_damping[:2]),
            gear=tuple(float(x) for x in m.actuator_gear[:2, 0]),
            link_lengths=tuple(float(x) for x in link_lengths),
            dt=float(m.opt.timestep),
            substeps=int(substeps),
        )


@functools.lru_cache(maxsize=1)
def arm2_params() -> PlanarArmParams:
    """Parameters of the shipped ``arm2`` MJCF (tip at 0.35 + 0.3 m), one step per 0.01 s."""
    return PlanarArmParams.from_mujoco(ArmModel("arm2").model, (0.35, 0.3), substeps=1)


@functools.lru_cache(maxsize=1)
def reacher_params() -> PlanarArmParams:
    """Parameters of gymnasium's Reacher-v5 (links 0.1 and 0.11 m, 2 x 0.01 s per step)."""
    import gymnasium.envs.mujoco as gym_mujoco

    xml = Path(gym_mujoco.__file__).resolve().parent / "assets" / "reacher.xml"
    return PlanarArmParams.from_mujoco(
        mujoco.MjModel.from_xml_path(str(xml)), (0.1, 0.11), substeps=2
    )


def _as_tensor(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def planar_arm_mass_matrix(q: torch.Tensor, params: PlanarArmParams) -> torch.Tensor:
    """Mass matrix ``M(q)``, shape ``(..., 2, 2)`` for ``q`` of shape ``(..., 2)``."""
    q2 = q[..., 1]
    h = params.b * torch.cos(q2) + params.e * torch.sin(q2)
    m11 = params.a + 2 * h
    m12 = params.c + h
    m22 = torch.full_like(q2, params.d)
    return torch.stack([torch.stack([m11, m12], -1), torch.stack([m12, m22], -1)], -2)


def planar_arm_bias(q: torch.Tensor, qd: torch.Tensor, params: PlanarArmParams) -> torch.Tensor:
    """Torques at zero acceleration (Coriolis, centrifugal, gravity, damping), ``(..., 2)``."""
    q1, q2 = q[..., 0], q[..., 1]
    qd1, qd2 = qd[..., 0], qd[..., 1]
    dh = -params.b * torch.sin(q2) + params.e * torch.cos(q2)
    c12 = torch.cos(q1 + q2)
    tau1 = dh * (2 * qd1 * qd2 + qd2**2) + params.p1 * torch.cos(q1) + params.p2 * c12
    tau2 = -dh * qd1**2 + params.p2 * c12
    damping = _as_tensor(params.damping, qd)
    return torch.stack([tau1, tau2], -1) + damping * qd


def planar_arm_forward_dynamics(
    q: torch.Tensor, qd: torch.Tensor, tau: torch.Tensor, params: PlanarArmParams
) -> torch.Tensor:
    """Joint accelerations ``M(q)^-1 (tau - bias)`` by the closed-form 2x2 inverse."""
    mm = planar_arm_mass_matrix(q, params)
    rhs = tau - planar_arm_bias(q, qd, params)
    m11, m12, m22 = mm[..., 0, 0], mm[..., 0, 1], mm[..., 1, 1]
    det = m11 * m22 - m12**2
    qdd1 = (m22 * rhs[..., 0] - m12 * rhs[..., 1]) / det
    qdd2 = (m11 * rhs[..., 1] - m12 * rhs[..., 0]) / det
    return torch.stack([qdd1, qdd2], -1)


def planar_arm_step(state, action, params: PlanarArmParams):
    """One control step: ``params.substeps`` RK4 steps of ``params.dt``, torque ``gear * a``.

    Parameters
    ----------
    state : torch.Tensor or numpy.ndarray of shape (..., 4)
        ``(q1, q2, qd1, qd2)``. A tensor keeps the step differentiable (iLQR,
        model-based rollouts); an array steps a batched simulator without
        torch's per-operation overhead.
    action : same type as ``state``, shape (..., 2)
        Normalised torque, clamped to ``[-1, 1]``.
    params : PlanarArmParams

    Returns
    -------
    next_state : same type as ``state``, shape (..., 4)
    """
    xp = np if isinstance(state, np.ndarray) else torch
    gear = np.asarray(params.gear) if xp is np else _as_tensor(params.gear, action)
    tau = gear * xp.clip(action, -1.0, 1.0)
    tau1, tau2 = tau[..., 0], tau[..., 1]
    p = params
    k1, k2 = p.damping

    def deriv(q1, q2, w1, w2):
        # Inlined planar_arm_forward_dynamics: this is iLQR's inner loop, and op count
        # dominates its cost on small tensors.
        c2, s2 = xp.cos(q2), xp.sin(q2)
        h = p.b * c2 + p.e * s2
        dh = p.e * c2 - p.b * s2
        c12 = xp.cos(q1 + q2)
        grav2 = p.p2 * c12
        r1 = tau1 - (dh * (2 * w1 * w2 + w2 * w2) + p.p1 * xp.cos(q1) + grav2 + k1 * w1)
        r2 = tau2 - (-dh * w1 * w1 + grav2 + k2 * w2)
        m11, m12 = p.a + 2 * h, p.c + h
        det = m11 * p.d - m12 * m12
        return w1, w2, (p.d * r1 - m12 * r2) / det, (m11 * r2 - m12 * r1) / det

    x = tuple(state[..., i] for i in range(4))
    dt = params.dt
    for _ in range(params.substeps):
        d1 = deriv(*x)
        d2 = deriv(*(xi + dt / 2 * di for xi, di in zip(x, d1, strict=True)))
        d3 = deriv(*(xi + dt / 2 * di for xi, di in zip(x, d2, strict=True)))
        d4 = deriv(*(xi + dt * di for xi, di in zip(x, d3, strict=True)))
        x = tuple(
            xi + dt / 6 * (a + 2 * b + 2 * c + d)
            for xi, a, b, c, d in zip(x, d1, d2, d3, d4, strict=True)
        )
    return xp.stack(x, -1)


def planar_arm_fingertip(q, params: PlanarArmParams):
    """Tip position in the arm's plane, ``(..., 2)``, from joint angles ``(..., 2)``.

    ``q`` is a tensor or an array; the result has its type.
    """
    xp = np if isinstance(q, np.ndarray) else torch
    l1, l2 = params.link_lengths
    q1, q12 = q[..., 0], q[..., 0] + q[..., 1]
    return xp.stack(
        [l1 * xp.cos(q1) + l2 * xp.cos(q12), l1 * xp.sin(q1) + l2 * xp.sin(q12)], -1
    )


def arm2_step(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """:func:`planar_arm_step` with the ``arm2`` parameters (0.01 s, 20 N m per unit action)."""
    return planar_arm_step(state, action, arm2_params())


def reacher_step(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """:func:`planar_arm_step` with Reacher-v5's parameters (0.02 s per step).

    Ignores the elbow's joint limit (+-3 rad) that MuJoCo enforces.
    """
    return planar_arm_step(state, action, reacher_params())


def reacher_fingertip(q: torch.Tensor) -> torch.Tensor:
    """Reacher fingertip ``(x, y)`` from joint angles ``(..., 2)``."""
    return planar_arm_fingertip(q, reacher_params())
