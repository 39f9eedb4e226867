"""Small helpers shared across the package: seeding and version stamps."""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
import torch


def seed_from(random_state) -> int | None:
    """An int seed drawn from ``random_state`` (None stays None)."""
    if random_state is None:
        return None
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    raise ValueError(f"random_state must be None, an int, a numpy Generator or RandomState; "
                     f"got {random_state!r}")


def torch_generator(random_state) -> torch.Generator | None:
    """A private CPU ``torch.Generator`` seeded from ``random_state`` (None: unseeded)."""
    seed = seed_from(random_state)
    if seed is None:
        return None
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def build_seeded(factory: Callable[[], torch.nn.Module], seed: int | None) -> torch.nn.Module:
    """Call ``factory()`` with torch's default initialisers seeded by ``seed``.

    The global RNG state is saved and restored around the call, so seeding
    one model never changes the random numbers anyone else draws.
    """
    if seed is None:
        return factory()
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed would also reseed (and not restore) the
        # CUDA generators, and costs milliseconds per call on machines without CUDA
        torch.random.default_generator.manual_seed(seed)
        return factory()


def available_devices() -> list[str]:
    """The torch devices this machine can train on, e.g. ``["cpu", "cuda:0"]``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device``, or a ValueError that lists the available ones."""
    available = available_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device={device!r} is not a torch device; available here: "
                         f"{', '.join(available)}") from None
    if parsed.type == "cpu":
        return parsed
    usable = {d for d in available if d != "cpu"} | {d.split(":")[0] for d in available}
    if str(parsed) not in usable:
        raise ValueError(f"device={device!r} is not available on this machine (torch "
                         f"{torch.__version__}); available here: {', '.join(available)}")
    return parsed


def versions() -> dict[str, str]:
    """Versions recorded in artifacts and benchmark results."""
    from . import __version__

    return {
        "sklearn_ml3": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        # from the installed metadata: the torch-only engine never imports scikit-learn
        "scikit_learn": version("scikit-learn"),
        "python": platform.python_version(),
    }
