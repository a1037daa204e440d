"""Learning-rate schedules: callables k -> lr, k counting from 0.

Pass one as an optimizer's lr (evaluated per step, k = steps taken), or wrap it in
fnn.callbacks.LearningRateScheduler (evaluated per epoch, k = epoch). Formulas follow
torch.optim.lr_scheduler's closed forms.
"""
import math

from ._validation import check_number
from .callbacks import ReduceLROnPlateau

__all__ = ["StepDecay", "MultiStepDecay", "ExponentialDecay", "CosineAnnealing",
           "CosineAnnealingWarmRestarts", "LinearDecay", "OneCycle", "ReduceLROnPlateau"]


class Schedule:
    def __call__(self, k):
        k = check_number(k, "k", low=0, integer=True)
        return float(self._lr(k))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class StepDecay(Schedule):
    """lr * gamma^floor(k / step_size) (torch StepLR)."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = check_number(lr, "lr", low=0)
        self.step_size = check_number(step_size, "step_size", low=1, integer=True)
        self.gamma = check_number(gamma, "gamma", low=0)

    def _lr(self, k):
        return self.lr * self.gamma ** (k // self.step_size)


class MultiStepDecay(Schedule):
    """lr * gamma^(number of milestones <= k) (torch MultiStepLR)."""

    def __init__(self, lr, milestones, gamma=0.1):
        self.lr = check_number(lr, "lr", low=0)
        self.milestones = sorted(check_number(m, "milestones", low=0, integer=True) for m in milestones)
        self.gamma = check_number(gamma, "gamma", low=0)

    def _lr(self, k):
        return self.lr * self.gamma ** sum(m <= k for m in self.milestones)


class ExponentialDecay(Schedule):
    """lr * gamma^k (torch ExponentialLR)."""

    def __init__(self, lr, gamma):
        self.lr = check_number(lr, "lr", low=0)
        self.gamma = check_number(gamma, "gamma", low=0)

    def _lr(self, k):
        return self.lr * self.gamma ** k


class CosineAnnealing(Schedule):
    """eta_min + (lr - eta_min) (1 + cos(pi k / T_max)) / 2 for k <= T_max, then eta_min
    (torch CosineAnnealingLR's closed form over its first half-period)."""

    def __init__(self, lr, T_max, eta_min=0.0):
        self.lr = check_number(lr, "lr", low=0)
        self.T_max = check_number(T_max, "T_max", low=1, integer=True)
        self.eta_min = check_number(eta_min, "eta_min", low=0)

    def _lr(self, k):
        k = min(k, self.T_max)
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * k / self.T_max)) / 2


class CosineAnnealingWarmRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017): cosine from lr to eta_min over T_i steps, then restart,
    T_i = T_0 * T_mult^i (torch CosineAnnealingWarmRestarts)."""

    def __init__(self, lr, T_0, T_mult=1, eta_min=0.0):
        self.lr = check_number(lr, "lr", low=0)
        self.T_0 = check_number(T_0, "T_0", low=1, integer=True)
        self.T_mult = check_number(T_mult, "T_mult", low=1, integer=True)
        self.eta_min = check_number(eta_min, "eta_min", low=0)

    def _lr(self, k):
        period = self.T_0
        while k >= period:
            k -= period
            period *= self.T_mult
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * k / period)) / 2


class LinearDecay(Schedule):
    """The lecture's schedule: lr_k = (1 - a) lr + a lr_tau with a = k / tau for k <= tau,
    then constant lr_tau (default lr_tau = lr / 100)."""

    def __init__(self, lr, tau, final_lr=None):
        self.lr = check_number(lr, "lr", low=0)
        self.tau = check_number(tau, "tau", low=1, integer=True)
        self.final_lr = self.lr / 100 if final_lr is None else check_number(final_lr, "final_lr", low=0)

    def _lr(self, k):
        a = min(k, self.tau) / self.tau
        return (1 - a) * self.lr + a * self.final_lr


class OneCycle(Schedule):
    """Smith's one-cycle policy (torch OneCycleLR, cosine, two phases): from max_lr/div_factor
    up to max_lr over pct_start * total_steps, then down to max_lr/(div_factor*final_div_factor)."""

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = check_number(max_lr, "max_lr", low=0)
        self.total_steps = check_number(total_steps, "total_steps", low=2, integer=True)
        self.pct_start = check_number(pct_start, "pct_start", 0, 1, low_open=True, high_open=True)
        self.div_factor = check_number(div_factor, "div_factor", low=0, low_open=True)
        self.final_div_factor = check_number(final_div_factor, "final_div_factor", low=0, low_open=True)

    def _lr(self, k):
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        peak = float(self.pct_start * self.total_steps) - 1
        last = self.total_steps - 1
        k = min(k, last)

        def cos_anneal(a, b, frac):
            return b + (a - b) / 2 * (1 + math.cos(math.pi * frac))

        if k <= peak:
            return cos_anneal(start, self.max_lr, k / peak if peak > 0 else 1.0)
        return cos_anneal(self.max_lr, end, (k - peak) / (last - peak))
