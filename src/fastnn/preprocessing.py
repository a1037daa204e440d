"""Input normalization."""
import numpy as np

from ._validation import check_matrix

__all__ = ["Standardizer"]


class Standardizer:
    """x_bar = (x - mu) / sigma per feature (the lecture's input normalization).

    Features with sigma = 0 (constant) are only centred (sigma is taken as 1), so no
    division by zero happens. mean_ and scale_ are float64.
    """

    def fit(self, X):
        X = check_matrix(X, "X", np.float64)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self):
        if not hasattr(self, "mean_"):
            raise RuntimeError("this Standardizer is not fitted yet; call fit(X) first")

    def transform(self, X, dtype=np.float32):
        self._check_fitted()
        X = check_matrix(X, "X", np.float64, n_features=self.n_features_in_)
        return ((X - self.mean_) / self.scale_).astype(dtype)

    def fit_transform(self, X, dtype=np.float32):
        return self.fit(X).transform(X, dtype)

    def inverse_transform(self, X):
        self._check_fitted()
        X = check_matrix(X, "X", np.float64, n_features=self.n_features_in_)
        return X * self.scale_ + self.mean_
