"""scikit-learn estimators trained with learned losses."""

from ._regressor import MetaLossRegressor

__all__ = ["MetaLossRegressor"]
