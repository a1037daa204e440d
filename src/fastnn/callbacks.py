"""Callbacks for fit: anything with on_epoch_end(epoch, logs); these are the common ones."""
import inspect

from ._validation import check_number

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "ReduceLROnPlateau"]


class Callback:
    """Base class with empty hooks; fit calls set_model, on_train_begin, on_epoch_begin,
    on_epoch_end(epoch, logs) and on_train_end. Set model.stop_training to stop."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs):
        pass

    def on_epoch_begin(self, epoch, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self, logs):
        pass


class History(Callback):
    """Per-epoch lists of every logged value: history["loss"], ["val_loss"], ["lr"], ..."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


class _Monitor(Callback):
    """Tracks the best value of a logged quantity (mode 'min', 'max' or 'auto')."""

    def __init__(self, monitor, mode, min_delta):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.min_delta = abs(check_number(min_delta, "min_delta"))
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.best = None

    def _value(self, logs):
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, which fit does not log; "
                           f"logged: {sorted(logs)} (val_* needs validation_split or validation_data)")
        return logs[self.monitor]

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by min_delta for `patience` epochs.
    restore_best_weights=True puts the best epoch's weights back when training ends,
    whether it stopped early or ran all its epochs."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        self.patience = check_number(patience, "patience", low=0, integer=True)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs):
        self.best, self.best_weights, self.best_epoch, self.wait = None, None, None, 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs):
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.parameters.copy()
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.parameters[...] = self.best_weights


class ModelCheckpoint(Callback):
    """Save the model to `path` after each epoch (only on improvement of `monitor` when
    save_best_only). `path` may contain {epoch} and any logged key, e.g. "m-{epoch:02d}.npz"."""

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        self.path = str(path)
        self.save_best_only = bool(save_best_only)
        self._monitor = _Monitor(monitor, mode, 0.0)

    def on_epoch_end(self, epoch, logs):
        from .io import save

        if self.save_best_only:
            value = self._monitor._value(logs)
            if not self._monitor._improved(value):
                return
            self._monitor.best = value
        save(self.model, self.path.format(epoch=epoch + 1, **logs))


class LearningRateScheduler(Callback):
    """Set the optimizer's lr at the start of each epoch to schedule(epoch) (0-based), where
    schedule is a fastnn.schedules object or any function epoch -> lr (or (epoch, lr) -> lr)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError("schedule must be callable: epoch -> lr")
        self.schedule = schedule
        try:
            params = inspect.signature(schedule).parameters.values()
            self._takes_lr = sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                                 for p in params) >= 2
        except (TypeError, ValueError):
            self._takes_lr = False

    def on_epoch_begin(self, epoch, logs):
        if self._takes_lr:
            lr = self.schedule(epoch, self.model.optimizer.current_lr())
        else:
            lr = self.schedule(epoch)
        self.model.optimizer.lr = check_number(float(lr), "scheduled lr", low=0.0)


class ReduceLROnPlateau(_Monitor):
    """Multiply lr by `factor` when `monitor` has not improved for `patience` epochs,
    then wait `cooldown` epochs; never below min_lr (torch's/Keras's ReduceLROnPlateau)."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4, mode="auto",
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        self.factor = check_number(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_number(patience, "patience", low=0, integer=True)
        self.cooldown = check_number(cooldown, "cooldown", low=0, integer=True)
        self.min_lr = check_number(min_lr, "min_lr", low=0.0)
        self.wait = self.cooling = 0

    def on_epoch_end(self, epoch, logs):
        value = self._value(logs)
        if self.cooling > 0:
            self.cooling -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience and self.cooling == 0:
            opt = self.model.optimizer
            opt.lr = max(self.min_lr, opt.current_lr() * self.factor)
            self.cooling, self.wait = self.cooldown, 0
