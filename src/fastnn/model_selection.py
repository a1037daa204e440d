"""Model selection without scikit-learn: k-fold cross-validation and hyperparameter search
(grid, random, and an evolutionary search, the lecture's zero-order method).

A search calls `model_fn(**params)` for each candidate to build a fresh, compiled
fastnn model, trains it with `fit_kwargs`, and scores it (higher is better) by accuracy
for classification losses and by minus the loss otherwise.
"""
import itertools
import math

import numpy as np

from ._validation import check_number

__all__ = ["KFold", "cross_validate", "grid_search", "random_search", "evolutionary_search",
           "SearchResult"]


class KFold:
    """Split n samples into k folds; each fold is the test set once, the other k - 1 train.
    Folds differ in size by at most one sample; shuffle permutes the samples first."""

    def __init__(self, n_splits=5, shuffle=True, seed=0):
        self.n_splits = check_number(n_splits, "n_splits", low=2, integer=True)
        self.shuffle = bool(shuffle)
        self.seed = seed

    def split(self, n_samples):
        """Yield (train_indices, test_indices) k times."""
        n_samples = check_number(n_samples, "n_samples", low=1, integer=True)
        if self.n_splits > n_samples:
            raise ValueError(f"k={self.n_splits} folds need at least {self.n_splits} samples, got {n_samples}")
        order = np.random.default_rng(self.seed).permutation(n_samples) if self.shuffle else np.arange(n_samples)
        bounds = [n_samples * i // self.n_splits for i in range(self.n_splits + 1)]
        for i in range(self.n_splits):
            test = order[bounds[i]:bounds[i + 1]]
            train = np.concatenate([order[:bounds[i]], order[bounds[i + 1]:]])
            yield train, test


def _score(model, X, y):
    result = model.evaluate(X, y)
    return result["accuracy"] if "accuracy" in result else -result["loss"]


def cross_validate(model_fn, X, y, k=5, fit_kwargs=None, shuffle=True, seed=0):
    """Train model_fn() on k - 1 folds and score it on the remaining one, k times.

    Returns {"scores": per-fold scores, "mean": ..., "std": ...}; the score is accuracy for
    classification losses and minus the mean loss otherwise.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    fit_kwargs = {"verbose": 0, **(fit_kwargs or {})}
    scores = []
    for train, test in KFold(k, shuffle, seed).split(len(X)):
        model = model_fn()
        model.fit(X[train], y[train], **fit_kwargs)
        scores.append(_score(model, X[test], y[test]))
    return {"scores": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores))}


class SearchResult:
    """best_params, best_score and every trial as a dict {"params": ..., "score": ...}."""

    def __init__(self, trials):
        self.trials = trials
        best = max(trials, key=lambda t: t["score"])
        self.best_params, self.best_score = best["params"], best["score"]

    def table(self):
        """The trials as aligned text, best first."""
        names = list(self.trials[0]["params"])
        rows = [[f"{t['score']:.4f}"] + [repr(t["params"][n]) for n in names]
                for t in sorted(self.trials, key=lambda t: -t["score"])]
        header = ["score"] + names
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header] + rows)

    def __repr__(self):
        return (f"SearchResult(best_score={self.best_score:.4f}, best_params={self.best_params}, "
                f"trials={len(self.trials)})")


def _check_space(space, model_fn):
    if not isinstance(space, dict) or not space:
        raise ValueError("the search space must be a non-empty dict {parameter name: values}")
    import inspect

    try:
        signature = inspect.signature(model_fn)
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = [] if accepts_any else [name for name in space if name not in signature.parameters]
    except (TypeError, ValueError):
        unknown = []
    if unknown:
        raise ValueError(f"model_fn does not take the search parameters {unknown}; its parameters are "
                         f"{list(signature.parameters)}")
    for name, values in space.items():
        if not callable(values) and not hasattr(values, "rvs") and len(values) == 0:
            raise ValueError(f"the search space for {name!r} is empty")


def _evaluate(model_fn, params, X, y, validation_data, k, fit_kwargs, seed):
    fit_kwargs = {"verbose": 0, **(fit_kwargs or {})}
    if validation_data is not None:
        model = model_fn(**params)
        model.fit(X, y, **fit_kwargs)
        return _score(model, *validation_data)
    return cross_validate(lambda: model_fn(**params), X, y, k, fit_kwargs, seed=seed)["mean"]


def grid_search(model_fn, space, X, y, validation_data=None, k=3, fit_kwargs=None, seed=0):
    """Try every combination of the listed values; score each on validation_data, or by
    k-fold cross-validation when none is given."""
    _check_space(space, model_fn)
    names = list(space)
    trials = []
    for values in itertools.product(*(space[n] for n in names)):
        params = dict(zip(names, values))
        score = _evaluate(model_fn, params, X, y, validation_data, k, fit_kwargs, seed)
        trials.append({"params": params, "score": score})
    return SearchResult(trials)


def _draw(values, rng):
    if hasattr(values, "rvs"):
        return values.rvs(random_state=rng)
    if callable(values):
        return values(rng)
    return values[rng.integers(len(values))]


def random_search(model_fn, space, X, y, n_trials=10, validation_data=None, k=3, fit_kwargs=None, seed=0):
    """n_trials candidates drawn independently: each parameter from its list (uniformly),
    a scipy.stats distribution (.rvs) or a function rng -> value (e.g. log-uniform lr)."""
    _check_space(space, model_fn)
    n_trials = check_number(n_trials, "n_trials", low=1, integer=True)
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n_trials):
        params = {name: _draw(values, rng) for name, values in space.items()}
        score = _evaluate(model_fn, params, X, y, validation_data, k, fit_kwargs, seed)
        trials.append({"params": params, "score": score})
    return SearchResult(trials)


def evolutionary_search(model_fn, space, X, y, population=8, generations=4, mutation_rate=0.3,
                        elite=2, validation_data=None, k=3, fit_kwargs=None, seed=0):
    """A genetic algorithm over the parameter lists: keep the `elite` best, fill the next
    generation with children of two parents picked by tournament (uniform crossover: each
    parameter from either parent), then mutate each parameter with probability
    mutation_rate (to a neighbouring value in its list). Candidates already scored are not
    trained again."""
    _check_space(space, model_fn)
    for name, values in space.items():
        if callable(values) or hasattr(values, "rvs"):
            raise ValueError(f"evolutionary_search needs a list of values for {name!r}")
    population = check_number(population, "population", low=2, integer=True)
    generations = check_number(generations, "generations", low=1, integer=True)
    mutation_rate = check_number(mutation_rate, "mutation_rate", 0.0, 1.0)
    elite = check_number(elite, "elite", 0, population - 1, integer=True)
    rng = np.random.default_rng(seed)
    names = list(space)
    sizes = [len(space[n]) for n in names]
    seen = {}

    def score(genome):
        if genome not in seen:
            params = {n: space[n][i] for n, i in zip(names, genome)}
            seen[genome] = _evaluate(model_fn, params, X, y, validation_data, k, fit_kwargs, seed)
        return seen[genome]

    def tournament(ranked):
        a, b = rng.integers(len(ranked), size=2)
        return ranked[min(a, b)]

    pop = [tuple(int(rng.integers(s)) for s in sizes) for _ in range(population)]
    for _ in range(generations):
        ranked = sorted(pop, key=score, reverse=True)
        children = ranked[:elite]
        while len(children) < population:
            mother, father = tournament(ranked), tournament(ranked)
            child = [m if rng.random() < 0.5 else f for m, f in zip(mother, father)]
            for j, s in enumerate(sizes):
                if s > 1 and rng.random() < mutation_rate:
                    child[j] = int(np.clip(child[j] + rng.choice([-1, 1]), 0, s - 1))
            children.append(tuple(child))
        pop = children
    for genome in pop:
        score(genome)
    trials = [{"params": {n: space[n][i] for n, i in zip(names, g)}, "score": s} for g, s in seen.items()]
    return SearchResult(trials)


def log_uniform(low, high):
    """A sampler rng -> value, uniform in log space over [low, high] (learning rates)."""
    if not (0 < low < high):
        raise ValueError(f"log_uniform needs 0 < low < high, got {low}, {high}")
    return lambda rng: float(math.exp(rng.uniform(math.log(low), math.log(high))))
