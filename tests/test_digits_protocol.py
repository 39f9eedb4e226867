"""The digit protocol shared by benchmarks/digit_pairs.py and the zoo: inputs and groups."""

import numpy as np
import pytest

from sklearn_ml3.experiments.digits import (
    TEN_CLASSES,
    digit_tasks,
    evaluate_panel,
    meta_train_digit_loss,
    new_loss,
)
from sklearn_ml3.experiments.harness import SeedStreams


def test_an_unknown_meta_training_task_is_refused():
    with pytest.raises(ValueError, match="'pair' or 'digits10'"):
        meta_train_digit_loss("mnist", 0, 0, n_meta_iter=1)


def test_ten_class_group_is_one_task_of_every_class():
    (task,) = digit_tasks((np.random.default_rng(0).random((60, 4)), np.arange(60) % 10),
                          TEN_CLASSES["test"], seed=0)
    assert task.y_train.shape[1] == 10 and task.extra["y_test"].max() == 9


def test_a_group_given_as_a_spec_records_its_own_selection_rule():
    rng = np.random.default_rng(0)
    mnist = (rng.random((200, 16)).astype(np.float32), np.arange(200) % 10)
    loss = new_loss(0)
    loss.meta_info_ = {"inner_optimizer": "sgd", "inner_lr": 1e-3}  # as meta-training records
    result = evaluate_panel({"untrained": loss}, SeedStreams(0, "test"), TEN_CLASSES,
                            "mlp", n_updates=2, eval_every=1, mnist=mnist)
    assert result["baseline"]["selected_on"] == TEN_CLASSES["selected_on"]
    assert result["baseline"]["name"] == "log-loss, mlp on 0x1x2x3x4x5x6x7x8x9"
    assert set(result["curves"]) == {"learned untrained", "log-loss at lr x ratio of untrained",
                                     "log-loss (same lr)", "log-loss (best lr)"}
    assert all(np.asarray(c).shape == (1, 3) for c in result["curves"].values())
