"""scikit-learn estimators trained with learned losses."""

from ._classifier import MetaLossClassifier
from ._modules import LeNet
from ._regressor import MetaLossRegressor

__all__ = ["LeNet", "MetaLossClassifier", "MetaLossRegressor"]
