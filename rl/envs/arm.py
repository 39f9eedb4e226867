"""Arm models for inverse dynamics: true mass matrix and torques from MuJoCo.

Two MJCF models ship in ``rl/envs/assets``: ``arm2`` (planar 2-link arm in a
vertical plane) and ``arm7`` (iiwa-like 7-DoF arm). :class:`ArmModel` evaluates
the mass matrix ``M(q)``, bias forces and inverse dynamics for batches of
states, and :func:`sample_trajectories` draws smooth joint trajectories inside
the joint limits with their torques.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from rl.envs._goal import as_generator

ASSETS = Path(__file__).resolve().parent / "assets"
ARM_NAMES = ("arm2", "arm7")


def _as_batch(x: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"{name} must have shape (N, {n}) or ({n},), got {np.shape(x)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


class ArmModel:
    """A MuJoCo arm evaluated state by state, constraints disabled.

    Joint limits and contacts are switched off (``mjDSBL_CONSTRAINT``) so that
    ``tau = M(q) qdd + bias(q, qd)`` holds exactly; the trajectories of
    :func:`sample_trajectories` stay inside the joint limits anyway.

    Parameters
    ----------
    name : {"arm2", "arm7"}
        Which shipped model to load.

    Attributes
    ----------
    model : mujoco.MjModel
    data : mujoco.MjData
    n_joints : int
    joint_range : ndarray of shape (n_joints, 2)
        Lower and upper limit of each joint (rad).

    Examples
    --------
    >>> arm = ArmModel("arm2")
    >>> arm.mass_matrix(np.zeros((1, 2))).shape
    (1, 2, 2)
    """

    def __init__(self, name: str = "arm2") -> None:
        if name not in ARM_NAMES:
            raise ValueError(f"name must be one of {ARM_NAMES}, got {name!r}")
        self.name = name
        self.xml_path = ASSETS / f"{name}.xml"
        self.model = mujoco.MjModel.from_xml_path(str(self.xml_path))
        self.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
        self.data = mujoco.MjData(self.model)
        self.n_joints = int(self.model.nv)
        self.joint_range = self.model.jnt_range.copy()

    def __repr__(self) -> str:
        return f"ArmModel({self.name!r})"

    def __reduce__(self):
        return (ArmModel, (self.name,))

    def mass_matrix(self, q: np.ndarray) -> np.ndarray:
        """Joint-space inertia matrix (armature included).

        Parameters
        ----------
        q : ndarray of shape (N, n_joints) or (n_joints,)

        Returns
        -------
        M : ndarray of shape (N, n_joints, n_joints)
        """
        q = _as_batch(q, self.n_joints, "q")
        m, d, n = self.model, self.data, self.n_joints
        out = np.empty((len(q), n, n))
        for i, qi in enumerate(q):
            d.qpos[:] = qi
            mujoco.mj_fwdPosition(m, d)
            mujoco.mj_fullM(m, d, out[i])
        return out

    def inverse_dynamics(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """Joint torques producing ``qdd`` at ``(q, qd)`` (``mujoco.mj_inverse``).

        Parameters
        ----------
        q, qd, qdd : ndarray of shape (N, n_joints) or (n_joints,)

        Returns
        -------
        tau : ndarray of shape (N, n_joints)
        """
        n = self.n_joints
        q, qd, qdd = (_as_batch(x, n, k) for x, k in ((q, "q"), (qd, "qd"), (qdd, "qdd")))
        if not len(q) == len(qd) == len(qdd):
            raise ValueError(f"q, qd, qdd need the same N, got {len(q)}, {len(qd)}, {len(qdd)}")
        m, d = self.model, self.data
        out = np.empty((len(q), n))
        for i in range(len(q)):
            d.qpos[:], d.qvel[:], d.qacc[:] = q[i], qd[i], qdd[i]
            mujoco.mj_inverse(m, d)
            out[i] = d.qfrc_inverse
        return out

    def bias_forces(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """Torques needed at zero acceleration: Coriolis, centrifugal, gravity, damping.

        Equals ``qfrc_bias - qfrc_passive``, so that
        ``inverse_dynamics(q, qd, qdd) = mass_matrix(q) @ qdd + bias_forces(q, qd)``.

        Returns
        -------
        bias : ndarray of shape (N, n_joints)
        """
        q = _as_batch(q, self.n_joints, "q")
        return self.inverse_dynamics(q, qd, np.zeros_like(q))

    def end_effector(self, q: np.ndarray) -> np.ndarray:
        """Cartesian position of the ``end_effector`` site, shape (N, 3)."""
        q = _as_batch(q, self.n_joints, "q")
        m, d = self.model, self.data
        sid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
        out = np.empty((len(q), 3))
        for i, qi in enumerate(q):
            d.qpos[:] = qi
            mujoco.mj_kinematics(m, d)
            out[i] = d.site_xpos[sid]
        return out


def sample_trajectories(
    arm: ArmModel | str,
    n_traj: int,
    n_steps: int,
    rng: np.random.Generator | int | None = None,
    dt: float = 0.01,
    n_sines: int = 3,
    freq_range: tuple[float, float] = (0.05, 0.5),
    range_fraction: float = 0.8,
    with_mass_matrix: bool = True,
) -> dict[str, np.ndarray]:
    """Smooth joint trajectories (sums of sinusoids) inside the joint limits, with torques.

    Each joint follows ``q(t) = c + sum_k a_k sin(2 pi f_k t + phi_k)``; the
    centre ``c`` and amplitudes are drawn so that ``|q - mid| <= range_fraction
    * half_range`` for every ``t``. ``qd``/``qdd`` are exact derivatives and
    ``tau`` comes from ``mj_inverse``.

    Parameters
    ----------
    arm : ArmModel or {"arm2", "arm7"}
    n_traj, n_steps : int
        Number of trajectories and samples per trajectory.
    rng : numpy Generator, int or None
    dt : float, default=0.01
        Sampling period (s).
    n_sines : int, default=3
        Sinusoids per joint.
    freq_range : (float, float), default=(0.05, 0.5)
        Frequency range in Hz.
    range_fraction : float, default=0.8
        Fraction of each joint's half-range the trajectory may use.
    with_mass_matrix : bool, default=True
        Also return ``M`` (true mass matrices) for shaped losses.

    Returns
    -------
    data : dict
        ``"t"`` (n_steps,), ``"q"``, ``"qd"``, ``"qdd"``, ``"tau"`` (n_traj,
        n_steps, n_joints) and, if requested, ``"M"`` (n_traj, n_steps,
        n_joints, n_joints).
    """
    if isinstance(arm, str):
        arm = ArmModel(arm)
    if n_traj < 1 or n_steps < 1 or n_sines < 1:
        raise ValueError("n_traj, n_steps and n_sines must be >= 1")
    if not 0 < range_fraction <= 1:
        raise ValueError(f"range_fraction must be in (0, 1], got {range_fraction}")
    gen = as_generator(rng)
    n = arm.n_joints
    lo, hi = arm.joint_range[:, 0], arm.joint_range[:, 1]
    mid, half = (lo + hi) / 2, range_fraction * (hi - lo) / 2
    t = np.arange(n_steps) * dt

    shift = gen.uniform(-0.3, 0.3, size=(n_traj, 1, n)) * half
    budget = half - np.abs(shift)  # amplitude left for the sinusoids
    weights = gen.dirichlet(np.ones(n_sines), size=(n_traj, n))  # (n_traj, n, n_sines)
    amp = weights.transpose(0, 2, 1) * budget  # (n_traj, n_sines, n)
    omega = 2 * np.pi * gen.uniform(*freq_range, size=(n_traj, n_sines, n))
    phase = gen.uniform(0, 2 * np.pi, size=(n_traj, n_sines, n))

    arg = omega[:, None] * t[None, :, None, None] + phase[:, None]  # (n_traj, T, n_sines, n)
    q = mid + shift + np.sum(amp[:, None] * np.sin(arg), axis=2)
    qd = np.sum((amp * omega)[:, None] * np.cos(arg), axis=2)
    qdd = -np.sum((amp * omega**2)[:, None] * np.sin(arg), axis=2)

    flat = (q.reshape(-1, n), qd.reshape(-1, n), qdd.reshape(-1, n))
    out = {
        "t": t,
        "q": q,
        "qd": qd,
        "qdd": qdd,
        "tau": arm.inverse_dynamics(*flat).reshape(n_traj, n_steps, n),
    }
    if with_mass_matrix:
        out["M"] = arm.mass_matrix(flat[0]).reshape(n_traj, n_steps, n, n)
    return out
