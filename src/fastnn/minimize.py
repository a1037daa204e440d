"""Full-batch second- and zero-order minimization of a model's training loss.

fnn.optim.minimize(model, X, y, method=...) updates model.parameters in place:
  "lbfgs"   L-BFGS-B (scipy.optimize) on the flat parameter vector with exact gradients;
  "newton"  damped Newton: w <- w - (H + mu I)^-1 g with a backtracking line search; H is
            built column by column from central differences of the exact gradient, so it
            costs 2P gradient evaluations per step: for small models (P <= max_params);
  "random"  random search: try w + sigma * N(0, I), keep it when the loss drops, and adapt
            sigma by Rechenberg's 1/5 success rule (no gradients at all);
  "es"      an evolution strategy (Salimans et al. 2017): estimate the gradient from
            antithetic Gaussian perturbations, g ~ sum_i (L(w + s e_i) - L(w - s e_i)) e_i / (2 s n),
            and take a plain gradient step (no gradients from the model).
The loss is the training-mode loss with weight penalties (dropout, if any, uses one fixed
mask per call, so stochastic layers make the objective noisy).
"""
import math

import numpy as np


__all__ = ["minimize", "MinimizeResult", "METHODS"]

METHODS = ("lbfgs", "newton", "random", "es")


class MinimizeResult:
    """loss (final), n_iter, n_evaluations, converged, history (loss after each iteration)."""

    def __init__(self, loss, n_iter, n_evaluations, converged, history):
        self.loss, self.n_iter, self.n_evaluations = loss, n_iter, n_evaluations
        self.converged, self.history = converged, history

    def __repr__(self):
        return (f"MinimizeResult(loss={self.loss:.6g}, n_iter={self.n_iter}, "
                f"n_evaluations={self.n_evaluations}, converged={self.converged})")


class _Objective:
    """The model's full-batch loss (and gradient) as a function of a float64 parameter vector."""

    def __init__(self, model, X, y, sample_weight):
        self.model = model
        self.X = model._check_X(X)
        self.targets, classes = model._check_targets(y, self.X.shape[0])
        self.weights = model._check_sample_weight(sample_weight, self.X.shape[0])
        model.classes_ = classes
        model._bind_optimizer()
        self.evaluations = 0

    def __call__(self, theta, gradient=True):
        model = self.model
        model.parameters[...] = theta
        self.evaluations += 1
        ctx = model._context(True, False)
        with model._blas_guard(self.X.shape[0]):
            if not gradient:
                out = model._forward(self.X, ctx)
                grad, row_loss = model._loss_buffers(self.X.shape[0])
                loss = model.loss(out, self.targets, grad, row_loss, self.weights, ctx.n_threads)
                return float(loss + sum(layer.penalty() for layer in model.layers))
            loss, *_ = model._loss_and_backward(self.X, self.targets, self.weights, ctx)
        g = model.gradients.astype(np.float64)
        for layer, _, start, stop, _ in model._specs:
            if not layer.trainable:
                g[start:stop] = 0
        return float(loss), g


def minimize(model, X, y, method="lbfgs", max_iter=100, tol=1e-6, sample_weight=None, seed=0,
             damping=1e-3, max_params=3000, sigma=0.1, population=20, lr=0.1, max_evaluations=None):
    """Minimize the model's full-batch training loss in place; returns a MinimizeResult.

    tol: stop when the gradient's largest entry (lbfgs, newton) or the loss improvement over
    an iteration (random, es) falls below it. max_evaluations: L-BFGS's budget of loss
    evaluations (default 20 * max_iter). damping: Newton's initial mu. sigma: the
    perturbation size of random search and the evolution strategy; population: their
    perturbations per iteration; lr: the evolution strategy's step size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    objective = _Objective(model, X, y, sample_weight)
    theta = model.parameters.astype(np.float64)
    if method == "lbfgs":
        return _lbfgs(objective, theta, max_iter, tol, max_evaluations or 20 * max_iter)
    if method == "newton":
        if theta.size > max_params:
            raise ValueError(f"Newton's method builds the {theta.size} x {theta.size} Hessian; this model has "
                             f"more than max_params={max_params} parameters. Use method='lbfgs'")
        return _newton(objective, theta, max_iter, tol, damping)
    rng = np.random.default_rng(seed)
    if method == "random":
        return _random_search(objective, theta, max_iter, tol, sigma, population, rng)
    return _evolution_strategy(objective, theta, max_iter, tol, sigma, population, lr, rng)


def _finish(objective, theta, loss, n_iter, converged, history):
    objective.model.parameters[...] = theta
    return MinimizeResult(loss, n_iter, objective.evaluations, converged, history)


def _lbfgs(objective, theta, max_iter, tol, max_evaluations):
    from scipy.optimize import minimize as scipy_minimize

    history = []

    def record(intermediate_result):
        history.append(float(intermediate_result.fun))

    result = scipy_minimize(objective, theta, jac=True, method="L-BFGS-B", callback=record,
                            options={"maxiter": max_iter, "gtol": tol, "maxfun": max_evaluations})
    return _finish(objective, result.x, float(result.fun), int(result.nit), bool(result.success), history)


def _hessian(objective, theta, h=1e-5):
    """Symmetrized central-difference Jacobian of the exact gradient."""
    n = theta.size
    H = np.empty((n, n))
    for i in range(n):
        step = np.zeros(n)
        step[i] = h
        H[:, i] = (objective(theta + step)[1] - objective(theta - step)[1]) / (2 * h)
    return 0.5 * (H + H.T)


def _newton(objective, theta, max_iter, tol, mu):
    loss, g = objective(theta)
    history, converged, it = [], False, 0
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) < tol:
            converged, it = True, it - 1
            break
        H = _hessian(objective, theta)
        while True:  # Levenberg-Marquardt: raise mu until the step is a descent direction
            try:
                step = np.linalg.solve(H + mu * np.eye(theta.size), g)
                if g @ step > 0:
                    break
            except np.linalg.LinAlgError:
                pass
            mu *= 10
        t = 1.0
        while True:  # Armijo backtracking
            new_loss, new_g = objective(theta - t * step)
            if new_loss <= loss - 1e-4 * t * (g @ step) or t < 1e-10:
                break
            t *= 0.5
        theta, loss, g = theta - t * step, new_loss, new_g
        mu = max(mu / 10, 1e-12) if t == 1.0 else mu * 10
        history.append(loss)
    else:
        converged = np.max(np.abs(g)) < tol
    return _finish(objective, theta, loss, it, bool(converged), history)


def _random_search(objective, theta, max_iter, tol, sigma, population, rng):
    loss = objective(theta, gradient=False)
    history, converged, it = [], False, 0
    for it in range(1, max_iter + 1):
        previous, successes = loss, 0
        for _ in range(population):
            candidate = theta + sigma * rng.standard_normal(theta.size)
            value = objective(candidate, gradient=False)
            if value < loss:
                theta, loss, successes = candidate, value, successes + 1
        # 1/5 success rule: widen the search when more than a fifth of the tries succeed
        sigma *= 1.5 if successes > population / 5 else 0.8
        history.append(loss)
        if 0 < previous - loss < tol:
            converged = True
            break
    return _finish(objective, theta, loss, it, converged, history)


def _evolution_strategy(objective, theta, max_iter, tol, sigma, population, lr, rng):
    loss = objective(theta, gradient=False)
    history, converged, it = [], False, 0
    pairs = max(1, population // 2)
    for it in range(1, max_iter + 1):
        eps = rng.standard_normal((pairs, theta.size))
        diffs = np.array([objective(theta + sigma * e, gradient=False) - objective(theta - sigma * e, gradient=False)
                          for e in eps])
        grad = (diffs[:, None] * eps).sum(axis=0) / (2 * sigma * pairs)
        previous = loss
        theta = theta - lr * grad
        loss = objective(theta, gradient=False)
        history.append(loss)
        if not math.isfinite(loss):
            break
        if abs(previous - loss) < tol:
            converged = True
            break
    return _finish(objective, theta, loss, it, converged, history)
