"""Render a picture of every environment and time its step, for ``docs/environments.md``.

Usage (MuJoCo needs a headless GL backend; EGL works on these machines)::

    MUJOCO_GL=egl python -m rl.envs.render_docs docs/img

Writes ``<name>.png`` per environment/arm and ``timings.json`` into the
output folder and prints a markdown table. MuJoCo pictures that cannot be
rendered (no GL backend) are skipped with a message; timings do not need GL.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch

import rl.envs as envs


def _save_png(image: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, image)


def _env_frame(env_id: str, goal: np.ndarray) -> np.ndarray:
    env = gym.make(env_id, goal=goal, render_mode="rgb_array", **_frame_kwargs(env_id))
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    frame = env.render()
    env.close()
    return frame


def _frame_kwargs(env_id: str) -> dict:
    mujoco_envs = ("ml3/ReacherGoal-v0", "ml3/AntGoal-v0")
    return {"width": 320, "height": 320} if env_id in mujoco_envs else {}


def _arm_frame(name: str) -> np.ndarray:
    arm = envs.ArmModel(name)
    data = mujoco.MjData(arm.model)
    data.qpos[:] = {"arm2": [0.6, 0.9], "arm7": [0.3, 0.6, 0.0, -1.2, 0.2, 0.7, 0.0]}[name]
    mujoco.mj_forward(arm.model, data)
    camera = mujoco.MjvCamera()
    camera.lookat[:] = {"arm2": [0.2, 0, 0.1], "arm7": [0, 0, 0.6]}[name]
    camera.distance = {"arm2": 1.6, "arm7": 2.4}[name]
    camera.azimuth, camera.elevation = 90.0, -15.0
    with mujoco.Renderer(arm.model, 320, 320) as renderer:
        renderer.update_scene(data, camera)
        return renderer.render()


def _time_env(env_id: str, n_steps: int) -> float:
    env = gym.make(env_id)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (n_steps,) + env.action_space.shape)
    actions = actions.astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return 1e6 * (time.perf_counter() - start) / n_steps


def _time_call(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return 1e6 * (time.perf_counter() - start) / repeat


def measure_timings(n_steps: int = 2000) -> dict[str, float]:
    """Microseconds per env step (wrapped as ``gymnasium.make`` returns it) and per twin call."""
    # gymnasium's own envs in the same run give a load-independent reference.
    references = ("MountainCarContinuous-v0", "Reacher-v5", "Ant-v5")
    timings = {f"{e} step": _time_env(e, n_steps) for e in envs.ENV_IDS + references}
    f64 = torch.float64
    twins = {
        "pointmass_step": (envs.pointmass_step, 4, 2),
        "mountain_car_step": (envs.mountain_car_step, 2, 1),
        "reacher_step": (envs.reacher_step, 4, 2),
        "arm2_step": (envs.arm2_step, 4, 2),
    }
    for name, (fn, nx, nu) in twins.items():
        for batch in (1, 256):
            x, u = torch.zeros(batch, nx, dtype=f64), torch.zeros(batch, nu, dtype=f64)
            timings[f"{name} batch {batch}"] = _time_call(lambda fn=fn, x=x, u=u: fn(x, u), 500)
    for name in envs.arm.ARM_NAMES:
        arm = envs.ArmModel(name)
        data = envs.sample_trajectories(arm, 1, 1000, rng=0, with_mass_matrix=False)
        q, qd, qdd = (data[k][0] for k in ("q", "qd", "qdd"))
        timings[f"{name} inverse_dynamics per state"] = (
            _time_call(lambda a=arm, q=q, qd=qd, qdd=qdd: a.inverse_dynamics(q, qd, qdd), 5) / 1000
        )
        timings[f"{name} mass_matrix per state"] = (
            _time_call(lambda a=arm, q=q: a.mass_matrix(q), 5) / 1000
        )
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="folder for the PNGs and timings.json")
    parser.add_argument("--steps", type=int, default=2000, help="steps per env timing")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    goals = {
        "ml3/PointmassGoal-v0": [1.0, 0.5],
        "ml3/MountainCarGoal-v0": [0.45],
        "ml3/ReacherGoal-v0": [0.1, 0.1],
        "ml3/AntGoal-v0": [2.0, 0.0],
    }
    pictures = [(env_id, lambda e=env_id: _env_frame(e, np.array(goals[e]))) for env_id in goals]
    pictures += [(name, lambda n=name: _arm_frame(n)) for name in envs.arm.ARM_NAMES]
    for name, render in pictures:
        file = args.outdir / (name.split("/")[-1].removesuffix("-v0") + ".png")
        try:
            _save_png(render(), file)
            print(f"wrote {file}")
        except Exception as exc:  # GL backends fail in many ways; report and go on
            print(f"skipped {name}: cannot render ({type(exc).__name__}: {exc}); try MUJOCO_GL=egl")

    timings = measure_timings(args.steps)
    meta = {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    (args.outdir / "timings.json").write_text(json.dumps({"us": timings, **meta}, indent=2))
    print("| what | us |\n|---|---|")
    for key, value in timings.items():
        print(f"| {key} | {value:.1f} |")


if __name__ == "__main__":
    main()
