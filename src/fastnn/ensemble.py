"""Ensembles: bagging (Breiman 1996) of fastnn models."""
import inspect

import numpy as np

from ._validation import check_number

__all__ = ["Bagging"]


class Bagging:
    """Train n_models copies of model_fn() on bootstrap resamples of the data (or on all of
    it with different seeds, bootstrap=False) and average their predictions.

    model_fn() must return a new model; if it takes a `seed` argument, member i gets seed + i,
    so the members also differ in initialization, dropout masks and shuffling.
    """

    def __init__(self, model_fn, n_models=5, bootstrap=True, seed=0):
        if not callable(model_fn):
            raise TypeError("model_fn must be a function returning a new fastnn model")
        self.model_fn = model_fn
        self.n_models = check_number(n_models, "n_models", low=1, integer=True)
        self.bootstrap = bool(bootstrap)
        self.seed = check_number(seed, "seed", low=0, integer=True)
        self.models = []

    def _new_model(self, i):
        try:
            takes_seed = "seed" in inspect.signature(self.model_fn).parameters
        except (TypeError, ValueError):
            takes_seed = False
        return self.model_fn(seed=self.seed + i) if takes_seed else self.model_fn()

    def fit(self, X, y, **fit_kwargs):
        """Train every member; fit_kwargs go to each model's fit (verbose defaults to 0)."""
        X, y = np.asarray(X), np.asarray(y)
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(f"X and y must hold the same, non-zero number of samples, got {len(X)} and {len(y)}")
        fit_kwargs = {"verbose": 0, **fit_kwargs}
        probe = self._new_model(0)
        self.classes_ = None
        targets = y
        if probe.loss.classification and y.ndim == 1:
            # encode once, so that a resample missing a class still maps labels the same way
            self.classes_, targets = np.unique(y, return_inverse=True)
        rng = np.random.default_rng(self.seed)
        self.models = []
        for i in range(self.n_models):
            rows = rng.integers(0, len(X), len(X)) if self.bootstrap else np.arange(len(X))
            model = probe if i == 0 else self._new_model(i)
            if self.classes_ is not None:
                model.classes_ = np.arange(len(self.classes_))
            model.fit(X[rows], targets[rows], **fit_kwargs)
            self.models.append(model)
        return self

    def _check_fitted(self):
        if not self.models:
            raise RuntimeError("this Bagging ensemble is not fitted yet; call fit(X, y) first")

    def predict(self, X):
        """The members' predictions (probabilities for classification) averaged."""
        self._check_fitted()
        return np.mean([m.predict(X) for m in self.models], axis=0)

    def predict_classes(self, X):
        """The class with the highest averaged probability, in the labels given to fit."""
        if self.classes_ is None:
            raise ValueError("predict_classes needs a classification ensemble fitted on 1-D labels")
        return self.classes_[self.predict(X).argmax(axis=1)]

    def score(self, X, y):
        """Accuracy of the averaged prediction (classification on 1-D labels)."""
        return float(np.mean(self.predict_classes(X) == np.asarray(y)))

    def member_scores(self, X, y):
        """Accuracy of each member alone."""
        self._check_fitted()
        idx = np.searchsorted(self.classes_, np.asarray(y))
        return [float(np.mean(m.predict(X).argmax(axis=1) == idx)) for m in self.models]
