"""Light imports: each package loads only what it needs (checked in a fresh interpreter)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("stable_baselines3", "sklearn", "torch", "torchopt", "numpy", "gymnasium", "mujoco")


def _run(code: str) -> str:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _loaded_after(statement: str) -> set[str]:
    code = (f"import json, sys\n{statement}\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    return set(json.loads(_run(code)))


@pytest.mark.parametrize(
    "statement, needed, absent",
    [
        ("import rl.envs", {"gymnasium", "mujoco", "torch", "numpy"}, {"stable_baselines3",
                                                                        "sklearn"}),
        ("import rl", {"gymnasium", "mujoco"}, {"stable_baselines3", "sklearn"}),
        ("import sklearn_ml3.meta", {"torch", "torchopt", "numpy"}, {"sklearn",
                                                                     "stable_baselines3"}),
        ("import sklearn_ml3", set(), {"sklearn", "torch"}),
        ("from sklearn_ml3 import LearnedLoss", {"torch"}, {"sklearn"}),
        ("from sklearn_ml3 import MetaLossRegressor", {"sklearn", "torch"}, {"stable_baselines3"}),
        ("import rl.meta.policies", {"torch"}, {"stable_baselines3", "sklearn"}),
        ("import rl.meta", {"torch", "gymnasium"}, {"stable_baselines3", "sklearn"}),
        ("from rl import ML3", {"stable_baselines3"}, set()),
    ],
)
def test_imports_load_only_what_they_need(statement, needed, absent):
    loaded = _loaded_after(statement)
    assert needed <= loaded, f"{statement} should load {needed - loaded}"
    assert not absent & loaded, f"{statement} loaded {absent & loaded}"


def test_public_names_stay_importable():
    import rl
    import sklearn_ml3
    import sklearn_ml3.meta

    for package in (rl, sklearn_ml3, sklearn_ml3.meta):
        for name in package.__all__:
            assert getattr(package, name) is not None
        assert set(package.__all__) <= set(dir(package))
    from rl import ML3, LearnedLossPPO, ML3Policy, meta_train_policy_loss  # noqa: F401
    from sklearn_ml3 import LearnedLoss, MetaLossClassifier, meta_train  # noqa: F401

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rl.nothing  # noqa: B018


def test_gymnasium_register_idiom_and_module_prefix_in_a_fresh_interpreter():
    made = _run(
        "import gymnasium as gym\n"
        "env = gym.make('rl:ml3/PointmassGoal-v0')\n"  # gymnasium imports rl first
        "import rl\n"
        "gym.register_envs(rl)\n"
        "other = gym.make('ml3/ReacherGoal-v0', goal_observation='dict')\n"
        "print(env.spec.max_episode_steps, type(other.unwrapped).__name__)"
    )
    assert made == "30 ReacherGoalEnv"
    missing = subprocess.run(
        [sys.executable, "-c", "import gymnasium as gym; gym.make('ml3/PointmassGoal-v0')"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert missing.returncode != 0 and "Namespace ml3 not found" in missing.stderr
