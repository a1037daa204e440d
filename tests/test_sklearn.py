"""fastnn.sklearn: scikit-learn's estimator checks, pipelines, search, pickling, solvers."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastnn as fnn  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Checks that cannot pass, each with its reason (an empty dict means every check runs).
EXPECTED_FAILED = {}


@parametrize_with_checks([MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=0),
                          MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def digits():
    (X, y), (Xt, yt) = fnn.datasets.load_digits()
    return X, y, Xt, yt


def test_classifier_on_digits_attributes(digits):
    X, y, Xt, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.score(Xt, yt) > 0.94
    assert list(clf.classes_) == list(range(10)) and clf.n_features_in_ == 64
    assert [c.shape for c in clf.coefs_] == [(64, 64), (64, 10)]
    assert [b.shape for b in clf.intercepts_] == [(64,), (10,)]
    assert len(clf.loss_curve_) == clf.n_iter_ <= 100 and clf.best_loss_ <= clf.loss_curve_[0]
    assert clf.validation_scores_ is None
    np.testing.assert_allclose(clf.predict_proba(Xt).sum(axis=1), 1, rtol=1e-6)


def test_early_stopping_and_validation_scores(digits):
    X, y, _, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3,
                        max_iter=200, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_) and clf.best_loss_ is None


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_solvers_learn(solver, digits):
    X, y, Xt, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), solver=solver, max_iter=60, random_state=0,
                        learning_rate_init=0.1 if solver == "sgd" else 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.score(Xt, yt) > 0.9


def test_lbfgs_reaches_a_stationary_point():
    """Full-batch L-BFGS-B on a small strongly-regularized net: the loss decreases at every
    recorded iteration and the gradient at the solution is near zero."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", alpha=1.0, max_iter=500, tol=1e-10,
                        dtype="float64", random_state=0).fit(X, y)
    _, grads = clf.model_.loss_and_gradients(X, y)
    assert max(np.abs(g).max() for g in grads) < 1e-4
    assert np.all(np.diff(clf.loss_curve_) <= 1e-12) and clf.n_iter_ == len(clf.loss_curve_)


def test_regressor_multioutput_and_partial_fit():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 4))
    Y = np.column_stack([X @ [1, 2, 0, 0], X @ [0, 0, -1, 1]])
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, Y)
    assert reg.predict(X).shape == (200, 2) and reg.score(X, Y) > 0.95
    inc = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    for _ in range(3):
        inc.partial_fit(X, Y[:, 0])
    assert inc.n_iter_ == 3 and inc.predict(X).shape == (200,)


def test_multilabel_classification():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 5))
    Y = (X[:, :3] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, Y)
    assert clf.predict(X).shape == (300, 3) and clf.score(X, Y) > 0.9
    assert clf.predict_proba(X).shape == (300, 3)


def test_partial_fit_needs_classes_and_string_labels():
    X = np.random.default_rng(3).standard_normal((40, 2))
    y = np.where(X[:, 0] > 0, "yes", "no")
    clf = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:20], y[:20], classes=["no", "yes"])
    clf.partial_fit(X[20:], y[20:])
    assert set(clf.predict(X)) <= {"no", "yes"}


def test_pipeline_grid_search_cross_val_clone_pickle(digits):
    X, y, _, _ = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert scores.mean() > 0.85 and search.best_score_ > 0.85
    fitted = search.best_estimator_
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))
    fresh = clone(fitted)
    assert not hasattr(fresh[-1], "model_")


def test_fastnn_extras_dropout_batch_norm_and_optimizer(digits):
    X, y, Xt, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(64,), dropout=0.1, batch_norm=True, optimizer="adamw",
                        max_iter=20, random_state=0, n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    kinds = [type(layer).__name__ for layer in clf.model_.layers]
    assert kinds == ["Dense", "BatchNorm", "Activation", "Dropout", "Dense"]
    assert isinstance(clf.model_.optimizer, fnn.optim.AdamW)
    assert clf.score(Xt, yt) > 0.9


@pytest.mark.parametrize("params,match", [
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
    ({"solver": "newton"}, "solver"),
    ({"activation": "softmax"}, "activation"),
    ({"max_iter": 0}, "max_iter"),
    ({"batch_size": 0}, "batch_size"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"dropout": 1.0}, "dropout"),
    ({"alpha": -1.0}, "alpha"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(np.ones((4, 2)), [0, 1, 0, 1])
