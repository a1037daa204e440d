"""k-fold cross-validation, grid/random/evolutionary search and bagging, on real data."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.model_selection import (KFold, cross_validate, evolutionary_search, grid_search, log_uniform,
                                    random_search)


@pytest.fixture(scope="module")
def digits():
    (X, y), (Xt, yt) = fnn.datasets.load_digits()
    scaler = fnn.Standardizer().fit(X)
    return scaler.transform(X), y, scaler.transform(Xt), yt


def net(hidden=32, lr=1e-2, seed=0):
    return fnn.Sequential([fnn.Dense(64, hidden, activation="relu"), fnn.Dense(hidden, 10)],
                          optimizer=fnn.optim.Adam(lr=lr), seed=seed)


def test_kfold_partitions_the_samples():
    folds = list(KFold(4, seed=1).split(10))
    assert len(folds) == 4
    tests = np.concatenate([t for _, t in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(10))
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 10
        assert len(test) in (2, 3)
    with pytest.raises(ValueError, match="k=4 folds need at least 4 samples"):
        list(KFold(4).split(3))
    with pytest.raises(ValueError, match="n_splits"):
        KFold(1)


def test_cross_validate(digits):
    X, y, _, _ = digits
    result = cross_validate(lambda: net(), X, y, k=3, fit_kwargs={"epochs": 5})
    assert len(result["scores"]) == 3 and result["mean"] > 0.9
    assert result["std"] == pytest.approx(np.std(result["scores"]))


def test_grid_and_random_search(digits):
    X, y, Xt, yt = digits
    grid = grid_search(net, {"hidden": [4, 64], "lr": [1e-2]}, X, y, validation_data=(Xt, yt),
                       fit_kwargs={"epochs": 5})
    assert len(grid.trials) == 2 and grid.best_params["hidden"] == 64
    assert grid.best_score == max(t["score"] for t in grid.trials)
    assert "hidden" in grid.table().splitlines()[0]
    rand = random_search(net, {"hidden": [8, 32], "lr": log_uniform(1e-3, 3e-2)}, X, y, n_trials=3,
                         validation_data=(Xt, yt), fit_kwargs={"epochs": 3}, seed=1)
    assert len(rand.trials) == 3 and all(1e-3 <= t["params"]["lr"] <= 3e-2 for t in rand.trials)


def test_evolutionary_search_finds_the_better_width(digits):
    X, y, Xt, yt = digits
    result = evolutionary_search(net, {"hidden": [2, 4, 64], "lr": [1e-4, 1e-2]}, X, y, population=4,
                                 generations=3, validation_data=(Xt, yt), fit_kwargs={"epochs": 4}, seed=0)
    assert result.best_params == {"hidden": 64, "lr": 1e-2}
    assert len({tuple(t["params"].values()) for t in result.trials}) == len(result.trials)  # no re-training


@pytest.mark.parametrize("space,match", [
    ({}, "non-empty"),
    ({"hidden": []}, "empty"),
    ({"width": [3]}, "does not take the search parameters \\['width'\\]"),
])
def test_bad_search_spaces(space, match, digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match=match):
        grid_search(net, space, X, y)


def test_bagging_beats_its_average_member(digits):
    X, y, Xt, yt = digits
    # small, quickly trained members: diverse, so averaging helps
    ensemble = fnn.ensemble.Bagging(lambda seed: net(hidden=16, lr=3e-3, seed=seed), n_models=7, seed=0)
    ensemble.fit(X, y, epochs=8, batch_size=32)
    members = ensemble.member_scores(Xt, yt)
    assert ensemble.score(Xt, yt) > np.mean(members)
    assert ensemble.predict(Xt).shape == (len(Xt), 10)
    np.testing.assert_allclose(ensemble.predict(Xt).sum(axis=1), 1, rtol=1e-5)


def test_bagging_with_string_labels_and_errors():
    X = np.random.default_rng(0).standard_normal((60, 64)).astype(np.float32)
    y = np.where(X[:, 0] > 0, "pos", "neg")
    two = lambda: fnn.Sequential([fnn.Dense(64, 2)])  # noqa: E731
    ens = fnn.ensemble.Bagging(two, n_models=3).fit(X, y, epochs=3)
    assert set(ens.predict_classes(X)) <= {"pos", "neg"}
    with pytest.raises(RuntimeError, match="not fitted"):
        fnn.ensemble.Bagging(two).predict(X)
    with pytest.raises(ValueError, match="n_models"):
        fnn.ensemble.Bagging(two, n_models=0)
