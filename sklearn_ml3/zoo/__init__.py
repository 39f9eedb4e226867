"""Pre-trained learned losses shipped with the package, each with a card of its measured result.

>>> from sklearn_ml3 import zoo
>>> "sine" in zoo.list()
True
>>> loss = zoo.load("sine")                     # a LearnedLoss, verified on load
>>> zoo.card("sine").kind
'regression'

Each entry is two files in ``sklearn_ml3/zoo/data/``: ``<name>.ml3`` (the
loss, safetensors) and ``<name>.json`` (its :class:`ZooCard`). The card
records the SHA-256 of the loss file; :func:`load` refuses a file that does
not match its card, on top of the file's own checksum
(:meth:`~sklearn_ml3.LearnedLoss.load`). ``benchmarks/zoo.py`` builds the
entries (the card's ``command``) and re-measures their results.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

DATA = "data"
#: The methods a card's result compares, in report order.
METHODS = ("learned", "same_lr", "best_lr", "step_size_control")
_METHOD_LABELS = {"learned": "learned loss", "same_lr": "hand-written, same lr",
                  "best_lr": "hand-written, tuned lr", "step_size_control": "step-size control"}


def _data_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath(DATA)))


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class ZooCard:
    """What a zoo entry is, how it was made and what it measurably does.

    Attributes
    ----------
    name : str
    summary : str
        One line: what the loss is for.
    kind : {"regression", "classification", "features"}
        The :class:`~sklearn_ml3.LearnedLoss` kind.
    task_family : str
        The tasks it is meant for.
    meta_trained_on : str
        What it saw during meta-training (never the measured tasks).
    usage : str
        One line of code that uses it.
    command : str
        The command that regenerates the entry (meta-training and the
        measurement of ``result``).
    seed : int
        ``random_state`` of meta-training.
    versions : dict of str to str
        Package versions at build time.
    sha256 : str
        SHA-256 of the ``.ml3`` file.
    meta_training : dict
        Optimizer, lr, iterations and CPU seconds of meta-training.
    result : dict
        The measured meta-test result: ``metric``, ``lower_is_better``,
        ``protocol`` (tasks, seeds, selection of the tuned lr) and, per
        method of :data:`METHODS` that was measured, ``{"mean", "std",
        "per_seed"}``; optionally ``cosine`` and ``norm_ratio`` of the
        step-size diagnostic.
    notes : str
        Where the entry wins and where it does not, in words.
    """

    name: str
    summary: str
    kind: str
    task_family: str
    meta_trained_on: str
    usage: str
    command: str
    seed: int
    versions: dict
    sha256: str
    meta_training: dict
    result: dict
    notes: str

    # ----------------------------------------------------------------- verdicts
    @property
    def wins(self) -> dict[str, str | None]:
        """:func:`compare` of the learned loss with each method (None: not measured)."""
        return {m: compare(self.result, m) for m in METHODS[1:]}

    @property
    def verdict(self) -> str:
        """The honest one-line reading of :attr:`wins`."""
        wins = self.wins
        tuned, same, control = wins["best_lr"], wins["same_lr"], wins["step_size_control"]
        if tuned is None:
            return "compared with other methods only (see the card)"
        words = {"better": "beats", "tie": "ties", "worse": "loses to"}
        text = f"{words[tuned]} the hand-written loss at its tuned lr"
        if same == "better" and tuned != "better":
            text = f"beats the hand-written loss at the same lr, {words[tuned]} it at its tuned lr"
        elif same in ("tie", "worse") and tuned == "better":
            text += f", {words[same]} it at the same lr"
        if control in ("tie", "worse"):
            text += f"; {words[control]} the step-size control"
        return text

    def one_line(self) -> str:
        """``name: summary; learned vs tuned (metric); verdict``, for listings."""
        res = self.result
        parts = [f"learned {res['learned']['mean']:.4g}"]
        for m in ("same_lr", "best_lr"):
            if m in res:
                parts.append(f"{_METHOD_LABELS[m]} {res[m]['mean']:.4g}")
        return f"{self.name}: {self.summary} [{res['metric']}: {', '.join(parts)}; " \
               f"{self.verdict}]"

    def to_markdown(self) -> str:
        """The card as Markdown (what ``ml3 zoo NAME`` prints)."""
        res = self.result
        lines = [f"# {self.name}", "", self.summary, "",
                 f"- kind: {self.kind}", f"- task family: {self.task_family}",
                 f"- meta-trained on: {self.meta_trained_on}",
                 "- meta-training: " + ", ".join(f"{k} {v}" for k, v in
                                                   self.meta_training.items()),
                 f"- seed: {self.seed}", f"- use: `{self.usage}`",
                 f"- regenerate: `{self.command}`",
                 "- versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
                 "", f"Measured: {res['protocol']}", "",
                 f"| method | {res['metric']} |", "|---|---|"]
        for m in METHODS:
            if m in res:
                lines.append(f"| {_METHOD_LABELS[m]} | {res[m]['mean']:.4g} ± "
                             f"{res[m]['std']:.2g} |")
        for extra in res.get("other_methods", {}):
            s = res["other_methods"][extra]
            lines.append(f"| {extra} | {s['mean']:.4g} ± {s['std']:.2g} |")
        if "cosine" in res:
            lines += ["", f"Step-size diagnostic: cosine with the hand-written gradient "
                          f"{res['cosine']:.3f}, norm ratio {res['norm_ratio']:.3g}."]
        lines += ["", f"Verdict: {self.verdict}.", "", self.notes]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ files
    @classmethod
    def from_dict(cls, data: Any, source: str = "card") -> ZooCard:
        """Validate and build a card (a clear error names the missing or wrong field)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a zoo card is a JSON object")
        names = {f.name: f.type for f in fields(cls)}
        missing = sorted(set(names) - set(data))
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ValueError(f"{source}: missing fields {missing}, unknown fields {unknown}")
        for key in ("versions", "meta_training", "result"):
            if not isinstance(data[key], dict):
                raise ValueError(f"{source}: {key} must be an object")
        result = data["result"]
        for key in ("metric", "lower_is_better", "protocol", "learned"):
            if key not in result:
                raise ValueError(f"{source}: result has no {key!r}")
        for m in METHODS:
            if m in result and not {"mean", "std", "per_seed"} <= set(result[m]):
                raise ValueError(f"{source}: result[{m!r}] needs mean, std and per_seed")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The card as a JSON-able dict (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON (atomically)."""
        from .._utils import atomic_write

        text = json.dumps(self.to_dict(), indent=1, allow_nan=True) + "\n"
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def compare(result: dict, method: str) -> str | None:
    """``"better"``, ``"tie"`` or ``"worse"``: the learned loss against ``method`` in a result.

    The seeds are paired (the same tasks and initialisations for both); the
    rule is :func:`sklearn_ml3.meta.compare_paired` (more than two standard
    errors of the per-seed differences, else a tie). None when ``method`` was
    not measured.
    """
    if method not in result:
        return None
    from ..meta.baselines import compare_paired

    return compare_paired(result["learned"]["per_seed"], result[method]["per_seed"],
                          lower_is_better=result["lower_is_better"])


def list() -> builtins.list[str]:  # noqa: A001 - the zoo's listing, as in the docs
    """Names of the shipped entries, sorted."""
    return sorted(p.stem for p in _data_dir().glob("*.json"))


def _check_name(name: str) -> None:
    names = list()
    if name not in names:
        raise KeyError(f"no zoo entry {name!r}; the entries are {names}")


def card(name: str) -> ZooCard:
    """The :class:`ZooCard` of entry ``name``.

    Raises
    ------
    KeyError
        If there is no such entry (the message lists the entries).
    """
    _check_name(name)
    path = _data_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    result = ZooCard.from_dict(data, source=str(path))
    if result.name != name:
        raise ValueError(f"{path}: card names {result.name!r}, not {name!r}")
    return result


def path(name: str) -> Path:
    """Where entry ``name``'s loss file is."""
    _check_name(name)
    return _data_dir() / f"{name}.ml3"


def load(name: str, device: str = "cpu"):
    """Entry ``name`` as a :class:`~sklearn_ml3.LearnedLoss`, verified against its card.

    Raises
    ------
    KeyError
        If there is no such entry.
    ValueError
        If the loss file's SHA-256 differs from its card's, or the file fails
        :meth:`~sklearn_ml3.LearnedLoss.load`'s own checks.
    """
    from ..learned_loss import LearnedLoss

    entry = card(name)
    file = path(name)
    if sha256_of(file) != entry.sha256:
        raise ValueError(f"{file}: its SHA-256 does not match the card of {name!r}; the "
                         "file was altered or the card is stale (rebuild the entry with: "
                         f"{entry.command})")
    return LearnedLoss.load(file, device=device)


__all__ = ["METHODS", "ZooCard", "card", "compare", "list", "load", "path", "sha256_of"]
