"""scikit-learn estimators trained by fastnn: MLPClassifier and MLPRegressor.

Parameter names follow sklearn.neural_network where they overlap; fastnn adds dropout,
batch_norm, optimizer (any fastnn.optim name), dtype and n_threads. Needs scikit-learn:
pip install "fastnn[sklearn]".

Differences from scikit-learn worth knowing:
- alpha is the L2 penalty alpha / (2 n_batch) * sum W^2 per batch, as scikit-learn
  computes it; fastnn's losses are the torch means (softmax cross-entropy over samples,
  mean squared error over all outputs, without scikit-learn's factor 1/2), so loss_curve_
  values of the regressor are twice scikit-learn's.
- Binary problems use two softmax outputs (scikit-learn: one logistic unit); the model is
  equivalent and predict_proba has the same shape.
"""
import contextlib
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastnn.sklearn needs scikit-learn: pip install 'fastnn[sklearn]' "
                      "(or pip install scikit-learn)") from exc

from . import layers as _layers
from . import optim as _optim
from .minimize import minimize
from .model import Sequential
from .threads import threads as _threads

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATION_NAMES = {"logistic": "sigmoid"}  # scikit-learn's names -> fastnn's


class _StopRule:
    """scikit-learn's stopping rule as a fit callback: no improvement of the training loss
    (or, with early stopping, of the validation score) by tol for n_iter_no_change epochs."""

    def __init__(self, estimator, validation):
        self.est, self.validation = estimator, validation
        self.count, self.best_params = 0, None

    def on_epoch_end(self, epoch, logs):
        est = self.est
        est.loss_curve_.append(logs["loss"])
        est.t_ += est._n_train
        if self.validation is not None:
            score = est._score_model(*self.validation)
            est.validation_scores_.append(score)
            if score < est.best_validation_score_ + est.tol:
                self.count += 1
            else:
                self.count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_params = est.model_.parameters.copy()
        else:
            if logs["loss"] > est.best_loss_ - est.tol:
                self.count += 1
            else:
                self.count = 0
            est.best_loss_ = min(est.best_loss_, logs["loss"])
        if self.count > est.n_iter_no_change:
            est.model_.stop_training = True
            est._converged = True


class _BaseMLP(BaseEstimator):
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0, batch_norm=False, optimizer=None, dtype="float32", n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.optimizer = optimizer
        self.dtype = dtype
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    # -- configuration ------------------------------------------------------------------------
    def _check_params(self):
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, (int, np.integer)) else list(hidden)
        if any(not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        if self.solver not in ("adam", "sgd", "lbfgs"):
            raise ValueError(f"solver must be 'adam', 'sgd' or 'lbfgs', got {self.solver!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.learning_rate_init <= 0:
            raise ValueError(f"learning_rate_init must be > 0, got {self.learning_rate_init}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be >= 1, got {self.n_iter_no_change}")
        activation = _ACTIVATION_NAMES.get(self.activation, self.activation)
        if activation not in _layers.ACTIVATIONS:
            raise ValueError(f"activation must be one of 'identity', 'logistic', 'tanh', 'relu' (or a "
                             f"fastnn activation name), got {self.activation!r}")
        return hidden, activation

    def _batch(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        return min(int(self.batch_size), n)

    def _make_optimizer(self):
        if self.optimizer is not None:
            return _optim.get(self.optimizer, lr=self.learning_rate_init)
        if self.solver == "sgd":
            return _optim.SGD(lr=self.learning_rate_init, momentum=self.momentum,
                              nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        return _optim.Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def _build(self, n_features, n_outputs, loss, batch):
        hidden, activation = self._check_params()
        l2 = self.alpha / batch
        seed = np.random.RandomState(self.random_state).randint(0, 2 ** 31 - 1) \
            if not isinstance(self.random_state, (int, np.integer)) else int(self.random_state)
        layers, width = [], n_features
        for size in hidden:
            if self.batch_norm:
                layers += [_layers.Dense(width, size, l2=l2), _layers.BatchNorm(size),
                           _layers.Activation(activation)]
            else:
                layers.append(_layers.Dense(width, size, activation=activation, l2=l2))
            if self.dropout:
                layers.append(_layers.Dropout(self.dropout))
            width = size
        layers.append(_layers.Dense(width, n_outputs, l2=l2))
        model = Sequential(layers, loss=loss, optimizer=self._make_optimizer(), dtype=self.dtype, seed=seed)
        # scikit-learn's initialization: W and b uniform in +-sqrt(f / (fan_in + fan_out)),
        # f = 2 for logistic units and 6 otherwise (Glorot & Bengio 2010)
        rng = np.random.default_rng(seed)
        factor = 2.0 if activation == "sigmoid" else 6.0
        for layer in layers:
            if isinstance(layer, _layers.Dense):
                bound = np.sqrt(factor / (layer.in_features + layer.out_features))
                layer.params["W"][...] = rng.uniform(-bound, bound, layer.params["W"].shape)
                layer.params["b"][...] = rng.uniform(-bound, bound, layer.params["b"].shape)
        return model

    # -- training ---------------------------------------------------------------------------------
    def _fit(self, X, y, incremental=False):
        targets, n_outputs, loss = self._encode_targets(y, incremental)
        batch = self._batch(X.shape[0])
        if self.batch_norm and X.shape[0] % batch == 1:
            batch = max(2, batch - 1)
        refit = not (incremental or self.warm_start) or not hasattr(self, "model_") \
            or self.model_.input_dim != X.shape[1] or self.model_.output_dim != n_outputs
        if refit:
            self.model_ = self._build(X.shape[1], n_outputs, loss, batch)
            self.loss_curve_, self.t_, self.best_loss_ = [], 0, np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
            self.n_iter_ = 0
        validation = None
        if self.early_stopping and not incremental:
            stratify = targets if getattr(self, "_stratify", False) and targets.ndim == 1 else None
            try:
                X, Xv, targets, tv = train_test_split(X, targets, test_size=self.validation_fraction,
                                                      random_state=self.random_state, stratify=stratify)
            except ValueError:
                X, Xv, targets, tv = train_test_split(X, targets, test_size=self.validation_fraction,
                                                      random_state=self.random_state)
            validation = (Xv, tv)
            self.best_loss_ = None
        self._n_train, self._converged = X.shape[0], False
        with self._thread_context():
            if self.solver == "lbfgs" and self.optimizer is None:
                self._fit_lbfgs(X, targets)
            else:
                epochs = 1 if incremental else self.max_iter
                rule = _StopRule(self, validation)
                history = self.model_.fit(X, targets, epochs=epochs, batch_size=batch, shuffle=self.shuffle,
                                          callbacks=[rule], verbose=2 if self.verbose else 0)
                self.n_iter_ += len(history.epoch)
                if rule.best_params is not None:
                    self.model_.parameters[...] = rule.best_params
                if not incremental and not self._converged and self.n_iter_ >= self.max_iter:
                    warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached and "
                                  f"the optimization hasn't converged yet.", ConvergenceWarning)
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else self.loss_
        return self

    def _fit_lbfgs(self, X, targets):
        """Full-batch L-BFGS-B (scipy) on the flat parameter vector, gradient from fastnn."""
        result = minimize(self.model_, X, targets, method="lbfgs", max_iter=self.max_iter, tol=self.tol,
                          max_evaluations=self.max_fun)
        self.n_iter_ = result.n_iter
        self.loss_ = self.best_loss_ = result.loss
        self.loss_curve_ = result.history
        if not result.converged:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iterations: increase max_iter "
                          f"or scale the data", ConvergenceWarning)

    # -- fitted views ---------------------------------------------------------------------------------
    @property
    def coefs_(self):
        check_is_fitted(self, "model_")
        return [layer.params["W"].copy() for layer in self.model_.layers if isinstance(layer, _layers.Dense)]

    @property
    def intercepts_(self):
        check_is_fitted(self, "model_")
        return [layer.params["b"].copy() for layer in self.model_.layers if isinstance(layer, _layers.Dense)]

    @property
    def n_layers_(self):
        return len(self.coefs_) + 1

    @property
    def n_outputs_(self):
        check_is_fitted(self, "model_")
        return self.model_.output_dim

    def _thread_context(self):
        """fastnn.threads(n_threads) when n_threads is set, else the current setting."""
        return _threads(self.n_threads) if self.n_threads is not None else contextlib.nullcontext()

    def _validate_X(self, X, reset):
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                             accept_sparse=False)

    def _forward(self, X):
        check_is_fitted(self, "model_")
        X = self._validate_X(X, reset=False)
        with self._thread_context():
            return self.model_.forward(X)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier (softmax cross-entropy; multi-label 0/1 targets use
    binary cross-entropy with one sigmoid per label), trained by fastnn."""

    _stratify = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _encode_targets(self, y, incremental):
        if self._multilabel:
            return y.astype(self.dtype), y.shape[1], "binary_cross_entropy"
        idx = np.searchsorted(self.classes_, y)
        return idx.astype(np.int64), len(self.classes_), "softmax_cross_entropy"

    def _prepare(self, X, y, reset, classes=None):
        X, y = validate_data(self, X, y, reset=reset, multi_output=True, dtype=[np.float64, np.float32],
                             y_numeric=False)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        check_classification_targets(y)
        kind = type_of_target(y)
        multilabel = kind == "multilabel-indicator"
        if reset:
            self._multilabel = multilabel
            self.classes_ = np.arange(y.shape[1]) if multilabel else np.unique(
                y if classes is None else np.concatenate([np.asarray(classes), y]))
        elif multilabel != self._multilabel:
            raise ValueError("y changed between multi-label indicator targets and class labels")
        elif not multilabel:
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            if unknown.size:
                raise ValueError(f"y holds labels {unknown.tolist()} not in classes_ {self.classes_.tolist()}")
        return X, y

    def fit(self, X, y):
        """Train on X, y (class labels, or a 0/1 indicator matrix for multi-label)."""
        self._check_params()
        X, y = self._prepare(X, y, reset=True)
        self.out_activation_ = "logistic" if self._multilabel else "softmax"
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y; the first call needs `classes` (all labels that will occur)."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver='lbfgs' is full-batch")
        first = not hasattr(self, "model_")
        if first and classes is None and type_of_target(y) != "multilabel-indicator":
            raise ValueError("classes must be passed on the first call to partial_fit")
        self._check_params()
        X, y = self._prepare(X, y, reset=first, classes=classes)
        if first:
            self.out_activation_ = "logistic" if self._multilabel else "softmax"
        return self._fit(X, y, incremental=True)

    def predict_proba(self, X):
        """Class probabilities (softmax), or per-label probabilities for multi-label."""
        out = self._forward(X)
        return self.model_.loss.link(out).astype(np.float64)

    def predict(self, X):
        proba = self.predict_proba(X)
        if self._multilabel:
            return (proba > 0.5).astype(int)
        return self.classes_[proba.argmax(axis=1)]

    def predict_log_proba(self, X):
        return np.log(np.clip(self.predict_proba(X), np.finfo(np.float64).tiny, None))

    def _score_model(self, X, targets):
        out = self.model_.forward(X)
        if self._multilabel:
            return float(np.mean(np.all((out > 0) == (targets > 0.5), axis=1)))
        return float(np.mean(out.argmax(axis=1) == targets))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor (mean squared error; multi-output y of shape (n, k)),
    trained by fastnn."""

    def _encode_targets(self, y, incremental):
        return y.reshape(len(y), -1).astype(self.dtype), (1 if y.ndim == 1 else y.shape[1]), "mse"

    def _prepare(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32])
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if reset:
            self._y_ndim = y.ndim
        return X, y

    def fit(self, X, y):
        """Train on X and real targets y of shape (n,) or (n, k)."""
        self._check_params()
        X, y = self._prepare(X, y, reset=True)
        self.out_activation_ = "identity"
        return self._fit(X, y)

    def partial_fit(self, X, y):
        """One epoch over X, y (continues the current model)."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver='lbfgs' is full-batch")
        self._check_params()
        first = not hasattr(self, "model_")
        X, y = self._prepare(X, y, reset=first)
        self.out_activation_ = "identity"
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        out = self._forward(X).astype(np.float64)
        return out.ravel() if self._y_ndim == 1 else out

    def _score_model(self, X, targets):
        out = self.model_.forward(X).astype(np.float64)
        t = targets.astype(np.float64)
        ss_res = ((t - out) ** 2).sum()
        ss_tot = ((t - t.mean(axis=0)) ** 2).sum()
        return float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0
