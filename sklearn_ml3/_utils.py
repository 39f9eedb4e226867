"""Small helpers shared across the package: seeding, version stamps, safe file writes."""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

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


# ------------------------------------------------------------------ files
_TMP_SUFFIX = ".tmp"


def _umask() -> int:
    try:  # read without changing it: os.umask() alone would race other threads
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Delete temporary files of earlier saves to ``path`` whose process has died."""
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{_TMP_SUFFIX}"):
        pid = candidate.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Write a file through ``write(temporary_path)``, then move it onto ``path``.

    The target is either the old file or the complete new one, also after a
    crash: the data is flushed with ``fsync`` before the rename, and the directory after.
    The new file gets the mode of the file it replaces, or ``0666 & ~umask``
    (``mkstemp`` alone would leave it 0600). Temporary files are named
    ``.<name>.<pid>.<random>.tmp`` beside the target; a later save to the same
    path removes those whose process no longer runs (left by a kill).

    Raises
    ------
    OSError
        Naming ``path`` (not the temporary file) when the write fails.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {parent} does not exist")
    _remove_orphans(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=_TMP_SUFFIX,
                                   dir=parent)
        os.close(fd)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        message = f"cannot write {path}: {exc.strerror or exc}"
        raise (type(exc)(exc.errno, message) if exc.errno else OSError(message)) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path
