"""Helpers shared by test modules."""

from collections.abc import Mapping


class ForbiddenExtra(Mapping):
    """Meta-train-only task information that fails loudly when anything reads it.

    Meta-test paths receive tasks whose ``extra`` is this mapping: a test
    passes only if they never look at it.
    """

    def __getitem__(self, key):
        raise AssertionError(f"meta-test read task.extra[{key!r}]")

    def __iter__(self):
        raise AssertionError("meta-test iterated over task.extra")

    def __len__(self):
        raise AssertionError("meta-test asked for len(task.extra)")
