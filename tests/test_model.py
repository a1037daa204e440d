"""The public model API: the contract in DESIGN.md, training, callbacks, determinism,
allocation-free steps, and the bad inputs each with a clear error and an unchanged model."""
import os
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastnn as fnn
from conftest import RTOL
from fastnn._core import _blas, dense


def small_model(seed=0, dtype="float32", optimizer=None, **kw):
    return fnn.Sequential([fnn.Dense(8, 16, activation="relu", init="he_normal"),
                           fnn.Dense(16, 3)], optimizer=optimizer or fnn.optim.Adam(lr=1e-2),
                          dtype=dtype, seed=seed, **kw)


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.standard_normal((3, 8)) * 3
    return (centers[y] + rng.standard_normal((n, 8))).astype(np.float32), y


@pytest.fixture(scope="module")
def digits():
    return fnn.datasets.load_digits()


def test_digits_reach_95_percent(digits):
    (X, y), (Xt, yt) = digits
    scaler = fnn.Standardizer().fit(X)
    X, Xt = scaler.transform(X), scaler.transform(Xt)
    model = fnn.Sequential([fnn.Dense(64, 128, activation="relu", init="he_normal"),
                            fnn.Dense(128, 10)], optimizer=fnn.optim.Adam(lr=1e-3), seed=0)
    hist = model.fit(X, y, epochs=20, batch_size=32, validation_split=0.1, verbose=0)
    assert set(hist.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert len(hist.history["loss"]) == 20
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    result = model.evaluate(Xt, yt)
    assert result["accuracy"] >= 0.95
    assert set(result) == {"loss", "accuracy"}


def test_predict_forward_evaluate_summary():
    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=5, batch_size=16, verbose=0)
    p = model.predict(X)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    logits = model.forward(X)
    np.testing.assert_allclose(p, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(model.predict_classes(X), p.argmax(1))
    acc = model.evaluate(X, y)["accuracy"]
    assert acc == np.mean(p.argmax(1) == y)
    text = model.summary(print_fn=None)
    assert "Dense(8 -> 16, relu)" in text and "Total params: 195" in text


def test_full_batch_and_pure_stochastic_gradient_descent():
    X, y = blobs(30)
    for batch_size, steps in [(30, 1), (1000, 1), (1, 30), (7, 5)]:
        model = small_model()
        model.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)
        assert model.optimizer.t == steps


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_fit_runs_steps_in_one_call_as_train_step_would(weighted, n_threads):
    """fit's steps, several to a DenseStack.train_batches call where they can be (every layer
    Dense, softmax cross-entropy, every Adam update fused), give train_step's weights, optimizer
    state, losses and accuracy on the same batches bit for bit: shuffled rows, a last batch of
    fewer rows, sample weights, label smoothing and a learning-rate schedule."""
    n, batch = 203, 32
    X, y = blobs(n)
    w = np.random.default_rng(1).uniform(0.5, 1.5, n).astype(np.float32) if weighted else None

    def make():
        return fnn.Sequential([fnn.Dense(8, 16, activation="relu"), fnn.Dense(16, 3)],
                              loss=fnn.losses.SoftmaxCrossEntropy(label_smoothing=0.1),
                              optimizer=fnn.optim.Adam(lr=lambda t: 1e-2 / (1 + 0.1 * t)), seed=0)

    fitted, stepped = make(), make()
    with fnn.threads(n_threads):
        history = fitted.fit(X, y, sample_weight=w, epochs=2, batch_size=batch, verbose=0).history
        rng = np.random.default_rng([0, 0])    # fit's shuffling: the model's seed, its first fit
        for epoch in range(2):
            order, loss, right = rng.permutation(n), 0.0, 0
            for start in range(0, n, batch):
                rows = order[start:start + batch]
                right += np.count_nonzero(stepped.forward(X[rows]).argmax(axis=1) == y[rows])
                loss += len(rows) * stepped.train_step(X[rows], y[rows], None if w is None else w[rows])
            assert history["loss"][epoch] == pytest.approx(loss / n, rel=1e-12)
            assert history["accuracy"][epoch] == right / n
    np.testing.assert_array_equal(fitted.parameters, stepped.parameters)
    assert fitted.optimizer.t == stepped.optimizer.t == 2 * 7
    for a, b in zip(fitted.optimizer.state_dict()["buffers"], stepped.optimizer.state_dict()["buffers"]):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_fit_diverging_within_a_call_names_the_step_and_keeps_the_steps_before():
    """A loss that overflows partway through fit's steps: the error names that step, the steps
    before it stand (the optimizer counted them), that one changed nothing."""
    X, y = blobs(640)
    model = small_model(optimizer=fnn.optim.Adam(lr=1.0))
    X[300:] *= np.float32(3e37)      # finite rows whose logits overflow once the weights grow
    with pytest.raises(FloatingPointError, match="diverged") as error:
        model.fit(X, y, epochs=1, batch_size=10, shuffle=True, verbose=0)
    steps = model.optimizer.t
    assert 0 < steps < 64 and f"step {steps + 1}:" in str(error.value)
    assert np.all(np.isfinite(model.parameters))


def test_full_batch_fit_equals_train_step_without_shuffle():
    X, y = blobs(40)
    a, b = small_model(), small_model()
    a.fit(X, y, epochs=3, batch_size=40, shuffle=False, verbose=0)
    for _ in range(3):
        b.train_step(X, y)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_train_step_is_an_adam_step_on_loss_and_gradients():
    X, y = blobs(20)
    model = small_model(dtype="float64", optimizer=fnn.optim.SGD(lr=0.1))
    w0 = model.get_weights()
    loss, grads = model.loss_and_gradients(X, y)
    assert model.train_step(X, y) == pytest.approx(loss)
    for w, g, w1 in zip(w0, grads, model.get_weights()):
        np.testing.assert_allclose(w1, w - 0.1 * g, rtol=1e-12, atol=1e-14)


def test_loss_and_gradients_and_forward_have_no_side_effects():
    X, y = blobs(20)
    model = small_model()
    model.train_step(X, y)
    weights, state, t = model.get_weights(), model.optimizer.state_dict(), model.optimizer.t
    model.loss_and_gradients(X, y)
    model.forward(X, training=True)
    model.forward(X)
    model.evaluate(X, y)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.t == t
    for k, v in state["buffers"][0].items():
        np.testing.assert_array_equal(v, model.optimizer.state_dict()["buffers"][0][k])


def test_same_seed_same_threads_is_bitwise_reproducible():
    X, y = blobs()
    runs = []
    for _ in range(2):
        model = small_model(seed=7)
        model.fit(X, y, epochs=3, batch_size=16, verbose=0)
        runs.append(model.parameters.copy())
    np.testing.assert_array_equal(*runs)
    other = small_model(seed=8)
    assert not np.array_equal(other.parameters, small_model(seed=7).parameters)


def test_one_and_two_threads_agree_within_tolerance():
    X, y = blobs(300)
    runs = []
    for threads in (1, 2):
        with fnn.threads(threads):
            model = small_model(dtype="float64")
            model.fit(X, y, epochs=2, batch_size=100, verbose=0)
            runs.append(model.parameters.copy())
    np.testing.assert_allclose(*runs, rtol=1e-9, atol=1e-12)


def test_training_step_allocates_no_arrays():
    X, y = blobs(64)
    model = fnn.Sequential([fnn.Dense(8, 256, activation="relu"), fnn.Dense(256, 256, activation="tanh"),
                            fnn.Dense(256, 3)], optimizer=fnn.optim.Adam())
    y = y.astype(np.int64)
    tracemalloc.start()
    try:
        for _ in range(30):
            model.train_step(X, y)  # warm-up: workspaces, optimizer state, library caches
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(100):
            model.train_step(X, y)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the smallest array a step could allocate is one 64 x 3 float32 block (768 bytes);
    # everything that remains is small Python objects (views, floats)
    assert after - before < 512
    assert peak - before < 64 * 256 * 4 / 4


def test_non_contiguous_and_read_only_inputs():
    X, y = blobs(50)
    model = small_model()
    wide = np.zeros((50, 16), np.float64)
    wide[:, ::2] = X
    view = wide[:, ::2]
    readonly = X.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(model.forward(view), model.forward(X))
    np.testing.assert_array_equal(model.forward(readonly), model.forward(X))
    np.testing.assert_array_equal(model.forward(np.asfortranarray(X)), model.forward(X))


# ---- labels and targets -----------------------------------------------------------------


def test_string_and_arbitrary_integer_labels():
    X, y = blobs()
    names = np.array(["cat", "dog", "eel"])[y]
    model = small_model()
    model.fit(X, names, epochs=10, batch_size=16, verbose=0)
    assert list(model.classes_) == ["cat", "dog", "eel"]
    assert set(model.predict_classes(X)) <= {"cat", "dog", "eel"}
    assert model.evaluate(X, names)["accuracy"] > 0.8
    with pytest.raises(ValueError, match="'fox', not among the model's classes"):
        model.evaluate(X[:2], ["cat", "fox"])
    model2 = small_model()
    model2.fit(X, y * 10 - 5, epochs=1, verbose=0)
    assert list(model2.classes_) == [-5, 5, 15]


def test_probability_targets_and_multilabel_and_regression():
    X, y = blobs()
    model = small_model()
    model.fit(X, np.eye(3)[y], epochs=3, verbose=0)
    assert "accuracy" in model.evaluate(X, np.eye(3)[y])
    multilabel = fnn.Sequential([fnn.Dense(8, 3)], loss="binary_cross_entropy",
                                optimizer=fnn.optim.Adam(lr=0.05))
    Y = (X[:, :3] > 0).astype(int)
    multilabel.fit(X, Y, epochs=30, verbose=0)
    assert multilabel.evaluate(X, Y)["accuracy"] > 0.9
    assert np.all((multilabel.predict(X) >= 0) & (multilabel.predict(X) <= 1))
    reg = fnn.Sequential([fnn.Dense(8, 1)], loss="mse", optimizer=fnn.optim.SGD(lr=0.05))
    X = fnn.Standardizer().fit_transform(X)
    target = X @ np.arange(8) / 10
    reg.fit(X, target, epochs=300, verbose=0)
    assert reg.evaluate(X, target)["loss"] < 1e-4
    assert "accuracy" not in reg.evaluate(X, target)


# ---- callbacks ----------------------------------------------------------------------------


def test_early_stopping_restores_best_weights_even_without_stopping():
    X, y = blobs()
    seen = {}

    class Spy(fnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            seen[epoch] = (logs["val_loss"], self.model.parameters.copy())

    model = small_model(optimizer=fnn.optim.SGD(lr=0.5))
    es = fnn.callbacks.EarlyStopping(patience=100, restore_best_weights=True)
    hist = model.fit(X, y, epochs=8, validation_split=0.25, callbacks=[es, Spy()], verbose=0)
    assert len(hist.epoch) == 8
    best = min(seen, key=lambda e: seen[e][0])
    np.testing.assert_array_equal(model.parameters, seen[best][1])


def test_early_stopping_stops_after_patience():
    X, y = blobs()

    class Worse:  # any object with on_epoch_end works; this one makes val_loss rise
        def on_epoch_end(self, epoch, logs):
            logs["val_loss"] = float(epoch)

    model = small_model()
    es = fnn.callbacks.EarlyStopping(patience=2)
    hist = model.fit(X, y, epochs=20, validation_split=0.2, callbacks=[Worse(), es], verbose=0)
    assert len(hist.epoch) == 3 and es.stopped_epoch == 2


def test_model_checkpoint_and_lr_callbacks(tmp_path):
    X, y = blobs()
    model = small_model()
    path = tmp_path / "best.npz"
    hist = model.fit(X, y, epochs=4, validation_split=0.2, verbose=0,
                     callbacks=[fnn.callbacks.ModelCheckpoint(path, save_best_only=True),
                                fnn.callbacks.LearningRateScheduler(fnn.schedules.StepDecay(0.01, 2, 0.5))])
    assert path.exists()
    assert hist.history["lr"] == [0.01, 0.01, 0.005, 0.005]
    plateau = fnn.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=10.0)
    hist = small_model().fit(X, y, epochs=3, callbacks=[plateau], verbose=0)
    assert hist.history["lr"] == [0.01, 0.01, 0.005]


def test_ctrl_c_stops_after_the_current_step():
    X, y = blobs(200)

    class Interrupt(fnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    model = small_model()
    hist = model.fit(X, y, epochs=5, batch_size=10, callbacks=[Interrupt()], verbose=0)
    assert len(hist.epoch) == 2
    assert model.optimizer.t == 20 + 1
    assert np.all(np.isfinite(model.parameters))


def test_verbose_modes(capsys):
    X, y = blobs(40)
    small_model().fit(X, y, epochs=2, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    small_model().fit(X, y, epochs=2, verbose=2)
    assert capsys.readouterr().out.count("Epoch") == 2
    small_model().fit(X, y, epochs=1, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/1" in err and "sample/s" in err and "loss" in err


def test_quiet_fit_does_not_import_the_progress_bar():
    """tqdm.auto imports asyncio (30-45 ms, paid by the first fit): only verbose=1 needs it."""
    code = ("import sys, numpy as np, fastnn as fnn\n"
            "model = fnn.Sequential([fnn.Dense(4, 3)], optimizer=fnn.optim.Adam(), seed=0)\n"
            "model.fit(np.random.rand(20, 4), np.arange(20) % 3, epochs=1, verbose=0)\n"
            "print('tqdm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_divergence_stops_with_a_clear_error_and_finite_weights():
    X, y = blobs()
    model = small_model(optimizer=fnn.optim.SGD(lr=1e30))
    with pytest.raises(FloatingPointError, match="diverged"):
        model.fit(X * 1e3, y, epochs=5, verbose=0)
    assert np.all(np.isfinite(model.parameters))


# ---- save / load --------------------------------------------------------------------------


def test_save_load_round_trip_resumes_training_exactly(tmp_path):
    X, y = blobs()
    model = fnn.Sequential([fnn.Dense(8, 16, activation="leaky_relu", alpha=0.2, l2=1e-3),
                            fnn.Activation("elu", alpha=0.5), fnn.Dense(16, 3)],
                           loss={"name": "softmax_cross_entropy", "label_smoothing": 0.1},
                           optimizer=fnn.optim.Adam(lr=1e-2, amsgrad=True), seed=3)
    names = np.array(["a", "b", "c"])[y]
    model.fit(X, names, epochs=2, verbose=0)
    path = tmp_path / "m.npz"
    fnn.save(model, path)
    loaded = fnn.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert list(loaded.classes_) == ["a", "b", "c"]
    assert loaded.get_config() == model.get_config()
    model.fit(X, names, epochs=2, verbose=0)
    loaded.fit(X, names, epochs=2, verbose=0)
    np.testing.assert_array_equal(loaded.parameters, model.parameters)
    assert not any(p.name.startswith(".fastnn-") for p in tmp_path.iterdir())


def test_load_rejects_truncated_tampered_and_foreign_files(tmp_path):
    model = small_model()
    good = tmp_path / "good.npz"
    fnn.save(model, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable fastnn model file"):
        fnn.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not a valid fastnn model file"):
        fnn.load(foreign)
    with np.load(good) as f:
        arrays = dict(f)
    arrays["parameters"] = arrays["parameters"][:-1]
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, **arrays)
    with pytest.raises(ValueError, match="parameters have shape"):
        fnn.load(tampered)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, config=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        fnn.load(pickled)


# ---- weights ------------------------------------------------------------------------------


def test_get_set_weights_layout_and_validation():
    model = small_model()
    W = model.get_weights()
    assert [w.shape for w in W] == [(8, 16), (16,), (16, 3), (3,)]
    W[0][...] = 1.0
    assert not np.all(model.get_weights()[0] == 1.0)  # copies, not views
    model.set_weights(W)
    np.testing.assert_array_equal(model.get_weights()[0], 1.0)
    before = model.parameters.copy()
    bad = [w.copy() for w in W]
    bad[3] = np.zeros(4)
    with pytest.raises(ValueError, match=r"weights\[3\] .* shape \(4,\), expected \(3,\)"):
        model.set_weights(bad)
    with pytest.raises(ValueError, match="needs 4 arrays"):
        model.set_weights(W[:3])
    bad = [w.copy() for w in W]
    bad[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.set_weights(bad)
    np.testing.assert_array_equal(model.parameters, before)


def test_initializers_are_seeded_and_have_the_right_scale():
    for name, std in [("glorot_normal", np.sqrt(2 / 700)), ("he_normal", np.sqrt(2 / 400)),
                      ("lecun_normal", np.sqrt(1 / 400)), ("he_uniform", np.sqrt(2 / 400)),
                      ("glorot_uniform", np.sqrt(2 / 700))]:
        a = fnn.Sequential([fnn.Dense(400, 300, init=name)], seed=1, dtype="float64").get_weights()[0]
        b = fnn.Sequential([fnn.Dense(400, 300, init=name)], seed=1, dtype="float64").get_weights()[0]
        np.testing.assert_array_equal(a, b)
        assert abs(a.std() / std - 1) < 0.02, name
    small = fnn.Sequential([fnn.Dense(400, 300, init="normal", std=0.01)]).get_weights()[0]
    assert abs(small.std() / 0.01 - 1) < 0.02
    assert not fnn.Sequential([fnn.Dense(4, 3, init="zeros")]).get_weights()[0].any()


# ---- bad inputs: a clear error, and the model unchanged ------------------------------------

BAD_FIT = [
    (lambda X, y: (X[:, :5], y), {}, ValueError, "5 features but the model expects 8"),
    (lambda X, y: (X, y[:-1]), {}, ValueError, "y has 119 samples but X has 120"),
    (lambda X, y: (np.where(np.arange(120)[:, None] == 3, np.nan, X), y), {}, ValueError, "X contains NaN"),
    (lambda X, y: (np.where(np.arange(120)[:, None] == 3, np.inf, X), y), {}, ValueError, "X contains NaN or inf"),
    (lambda X, y: (X[:0], y[:0]), {}, ValueError, "X is empty"),
    (lambda X, y: (X[:, 0], y), {}, ValueError, "X must be 2-D"),
    (lambda X, y: (X.astype(object), y), {}, TypeError, "X must hold real numbers"),
    (lambda X, y: (X.astype(complex), y), {}, TypeError, "complex"),
    (lambda X, y: (X, y + 0.5), {}, ValueError, "non-integer class labels"),
    (lambda X, y: (X, np.where(np.arange(120) == 0, 7, y)), {}, ValueError, "label 7, outside the model's classes"),
    (lambda X, y: (X, y), {"batch_size": 0}, ValueError, "batch_size must be in"),
    (lambda X, y: (X, y), {"batch_size": -3}, ValueError, "batch_size"),
    (lambda X, y: (X, y), {"epochs": -1}, ValueError, "epochs"),
    (lambda X, y: (X, y), {"validation_split": 0.999}, ValueError, "leaves 0 training"),
    (lambda X, y: (X, y), {"validation_split": 1.0}, ValueError, "validation_split"),
    (lambda X, y: (X, y), {"verbose": 3}, ValueError, "verbose"),
    (lambda X, y: (X, y), {"callbacks": [object()]}, TypeError, "on_epoch_end"),
    (lambda X, y: (X, y), {"validation_data": (np.ones((3, 8)),)}, ValueError, "validation_data"),
]


@pytest.mark.parametrize("make,kwargs,error,match", BAD_FIT)
def test_bad_fit_inputs_raise_and_leave_the_model_unchanged(make, kwargs, error, match):
    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=1, verbose=0)
    before, t, classes = model.parameters.copy(), model.optimizer.t, model.classes_
    Xb, yb = make(X, y)
    with pytest.raises(error, match=match):
        model.fit(Xb, yb, **{"verbose": 0, **kwargs})
    np.testing.assert_array_equal(model.parameters, before)
    assert model.optimizer.t == t and model.classes_ is classes


@pytest.mark.parametrize("first", ["relu", "identity", "tanh", "batchnorm"])
@pytest.mark.parametrize("rows,threads", [(2, 1), (120, 1), (300, 2)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_X_raises_before_anything_changes(first, rows, threads, bad):
    """A Dense first layer checks X for NaN and infinity inside its product (no pass of its
    own when the product proves X finite); every entry point still names X, and train_step
    leaves weights, optimizer, classes and running statistics as they were."""
    head = ([fnn.BatchNorm(8), fnn.Dense(8, 16, activation="relu")] if first == "batchnorm"
            else [fnn.Dense(8, 16, activation=first), fnn.BatchNorm(16)])
    model = fnn.Sequential(head + [fnn.Dense(16, 3)], optimizer=fnn.optim.Adam(lr=1e-2), seed=0)
    X, y = blobs(rows)
    with fnn.threads(threads):
        model.train_step(X, y)
        before, t, classes = model.parameters.copy(), model.optimizer.t, model.classes_
        stats = [a.copy() for layer in model.layers for a in layer.state_arrays().values()]
        Xb = X.copy()
        Xb[-1, -1] = bad
        for call in (lambda: model.train_step(Xb, y), lambda: model.predict(Xb),
                     lambda: model.forward(Xb, training=True), lambda: model.evaluate(Xb, y),
                     lambda: model.loss_and_gradients(Xb, y)):
            with pytest.raises(ValueError, match="X contains NaN or infinity"):
                call()
        np.testing.assert_array_equal(model.parameters, before)
        assert model.optimizer.t == t and model.classes_ is classes
        for a, b in zip(stats, [a for layer in model.layers for a in layer.state_arrays().values()]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(model.predict(X[:50]), model.predict(X)[:50])


def test_overflow_from_finite_X_is_not_called_nonfinite_input():
    """Finite X whose first product overflows (or NaN weights) is not a bad input: predict
    returns what the arithmetic gives, train_step reports divergence."""
    X, y = blobs()
    model = small_model()
    model.train_step(X, y)
    huge = X.copy()
    huge[0] = np.finfo(np.float32).max
    assert not np.all(np.isfinite(model.forward(huge)[0]))
    with pytest.raises(FloatingPointError, match="training diverged"):
        model.train_step(huge, y)
    model.layers[0].params["W"][0, 0] = np.nan   # NaN in every first product: X is checked and passes
    assert model.predict(X).shape == (120, 3)


def test_more_labels_than_outputs():
    X, y = blobs()
    with pytest.raises(ValueError, match="4 distinct labels but the model has 3 outputs"):
        small_model().fit(X, np.where(np.arange(120) == 0, 7, y), verbose=0)


def test_labels_outside_the_classes_at_evaluate_time():
    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="label 3, outside the model's classes 0..2"):
        model.evaluate(X[:3], [0, 1, 3])
    with pytest.raises(ValueError, match="NaN"):
        fnn.Sequential([fnn.Dense(8, 1)], loss="mse").fit(X, np.full(120, np.nan), verbose=0)


@pytest.mark.parametrize("make,error,match", [
    (lambda: fnn.Dense(3, 4, activation="relux"), ValueError, "unknown activation 'relux'"),
    (lambda: fnn.Dense(3, 4, init="glorot"), ValueError, "unknown init 'glorot'"),
    (lambda: fnn.Dense(0, 4), ValueError, "in_features"),
    (lambda: fnn.Dense(3, 4, l2=-1), ValueError, "l2"),
    (lambda: fnn.Dense(3, 4, activation="relu", alpha=0.1), ValueError, "takes no parameters"),
    (lambda: fnn.Activation("softplus", beta=0), ValueError, "beta must be > 0"),
    (lambda: fnn.Sequential([fnn.Dense(3, 4)], loss="cross_entropy"), ValueError, "unknown loss"),
    (lambda: fnn.Sequential([fnn.Dense(3, 4), fnn.Dense(5, 2)]), ValueError, "set in_features=4"),
    (lambda: fnn.Sequential([]), ValueError, "non-empty"),
    (lambda: fnn.Sequential([np.ones(3)]), TypeError, "not a fastnn layer"),
    (lambda: fnn.Sequential([fnn.Dense(3, 4)], dtype="float16"), ValueError, "dtype"),
    (lambda: fnn.Sequential([fnn.Activation("relu")]), ValueError, "input_dim"),
    (lambda: fnn.Sequential([fnn.Dense(3, 4)], loss={"name": "huber", "delta": -1}), ValueError, "delta"),
])
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_sparse_input_is_refused_with_a_hint():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="toarray"):
        small_model().predict(sparse.csr_matrix(np.ones((2, 8))))


def test_design_contract_example_runs():
    X, y = blobs(300)
    X = np.hstack([X, np.zeros((300, 776), np.float32)])
    model = fnn.Sequential(
        [fnn.Dense(784, 256, activation="relu", init="he_normal"),
         fnn.Dropout(0.2),
         fnn.Dense(256, 128), fnn.BatchNorm(128), fnn.Activation("tanh"),
         fnn.Dense(128, 10)],
        loss="softmax_cross_entropy", optimizer=fnn.optim.Adam(lr=1e-3),
        dtype="float32", seed=0)
    hist = model.fit(X, y, epochs=3, batch_size=128, validation_split=0.1,
                     callbacks=[fnn.callbacks.EarlyStopping(patience=3, restore_best_weights=True)],
                     verbose=0)
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(hist.history)
    assert model.predict(X).shape == (300, 10)
    assert model.forward(X, training=False).shape == (300, 10)
    assert set(model.evaluate(X, y)) == {"loss", "accuracy"}
    W = model.get_weights()
    assert [w.shape for w in W] == [(784, 256), (256,), (256, 128), (128,), (128,), (128,), (128, 10), (10,)]
    assert model.layers[3].running_mean.shape == (128,) and model.layers[3].running_var.shape == (128,)
    model.set_weights(W)
    loss, grads = model.loss_and_gradients(X, y)
    assert len(grads) == len(W)
    assert isinstance(model.train_step(X, y), float)


def test_pickle_round_trip_keeps_flat_buffer_views():
    import pickle

    X, y = blobs()
    model = small_model()
    model.fit(X, y, epochs=2, verbose=0)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    assert np.shares_memory(clone.layers[0].params["W"], clone.parameters)
    model.fit(X, y, epochs=1, verbose=0)
    clone.fit(X, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(clone.parameters, model.parameters)


def test_flat_buffers_and_optimizer_state_are_cache_line_aligned():
    model = small_model()
    model.train_step(*blobs(16))
    arrays = [model.parameters, model.gradients] + list(model.optimizer.state_dict()["buffers"][0].values())
    assert model.parameters.ctypes.data % 64 == 0 and model.gradients.ctypes.data % 64 == 0
    for state in model.optimizer._buffers[0].values():
        assert state.ctypes.data % 64 == 0
    assert len(arrays) == 4


def test_layer_workspaces_are_cache_line_aligned():
    """Activations and their gradients are split between threads by columns at multiples of
    16; with 64-byte aligned rows no cache line then holds two threads' columns."""
    model = small_model()
    model.train_step(*blobs(300))
    workspaces = [buf for layer in model.layers for buf in layer._workspace.values()]
    assert workspaces
    for buf in workspaces:
        assert buf.ctypes.data % 64 == 0


def test_training_is_the_same_on_any_thread_count(dtype):
    """README promise: split products sum each element in one order, batch sums run over fixed
    chunks of rows; three epochs with batch norm, tanh and ReLU give identical parameters on
    1, 2 and 3 threads (300 rows: chunks of 64 with a partial last one; 600 columns: splits).
    Where BLAS computes the products (a build without AVX-512), its blocking may follow the
    split: the parameters then agree to rounding."""
    own_gemm = not _blas.calls_blas(dtype, False, False, 100, 600, 40)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 40)).astype(dtype)
    y = rng.integers(0, 3, 300)
    results = []
    for threads in (1, 2, 3):
        with fnn.threads(threads):
            model = fnn.Sequential([fnn.Dense(40, 600, activation="relu"), fnn.BatchNorm(600),
                                    fnn.Dense(600, 300, activation="tanh"), fnn.Dense(300, 3)],
                                   optimizer=fnn.optim.Adam(lr=1e-3), seed=0, dtype=np.dtype(dtype).name)
            model.fit(X, y, epochs=3, batch_size=100, verbose=0)
            results.append(model.parameters.copy())
    for other in results[1:]:
        if own_gemm:
            np.testing.assert_array_equal(results[0], other)
        else:
            np.testing.assert_allclose(results[0], other, rtol=RTOL[dtype] * 100, atol=RTOL[dtype] * 100)


FUSES = dense.FUSED_ADAM_MAX_BATCH > 0     # this build fuses Adam into the weight gradient's product
FUSABLE_OPTIMIZERS = {
    "adam": lambda: fnn.optim.Adam(lr=1e-2),
    "adamw-amsgrad-clip-schedule": lambda: fnn.optim.AdamW(lr=lambda t: 1e-2 / (1 + 0.1 * t), amsgrad=True,
                                                           clip_value=0.05, decay_all=False),
    "adam-l2": lambda: fnn.optim.Adam(lr=3e-3, weight_decay=1e-2),
}


def _fusion_trio(make_optimizer, monkeypatch, stack):
    """Three equal models: the first updates parameters inside its backward pass (with stack,
    all of them, in its DenseStack; else every Dense weight matrix, each in its layer's
    backward pass, a Dropout layer keeping the model off the stack); the second the same through
    the layers' own backward passes (no stack); the third in the optimizer's step."""
    monkeypatch.setattr(fnn.model, "FUSED_UPDATE_MIN", 1)
    models = []
    for _ in range(3):
        model = fnn.Sequential([fnn.Dense(8, 33, activation="relu"), fnn.Dense(33, 17, activation="tanh")]
                               + ([] if stack else [fnn.Dropout(0.1)]) + [fnn.Dense(17, 3)],
                               optimizer=make_optimizer(), seed=4)
        model.layers[1].lr_multiplier = 0.5
        models.append(model)
    models[1]._all_dense = models[2]._all_dense = False
    for layer in models[2].layers:
        layer.fused_update = None
    return models


@pytest.mark.parametrize("stack", [True, False], ids=["stack", "layers"])
@pytest.mark.parametrize("optimizer", sorted(FUSABLE_OPTIMIZERS))
def test_weight_updates_fused_into_backward_equal_the_optimizer_step(optimizer, stack, n_threads, monkeypatch):
    """Adam's updates applied inside the backward pass (a DenseStack's: every parameter; a
    layer's: its weights, for float32 weights of FUSED_UPDATE_MIN or more) give the optimizer
    step's weights and state bit for bit, through train_step and fit, and when a layer is frozen."""
    X, y = blobs(200)
    models = _fusion_trio(FUSABLE_OPTIMIZERS[optimizer], monkeypatch, stack)
    with fnn.threads(n_threads):
        for model in models:
            model.train_step(X[:40], y[:40])
        assert len(models[0]._fused_context(40)[1]) == (6 if stack else 3) * FUSES
        assert len(models[1]._fused_context(40)[1]) == 3 * FUSES
        assert models[2]._fused_context(40)[1] == ()
        for model in models:
            model.fit(X, y, epochs=2, batch_size=32, verbose=0)
            model.layers[0].trainable = False
            model.train_step(X[:50], y[:50])
            model.layers[0].trainable = True
            model.fit(X, y, epochs=1, batch_size=64, verbose=0)
    for model in models[:2]:
        np.testing.assert_array_equal(model.parameters, models[2].parameters)
        for a, b in zip(model.optimizer.state_dict()["buffers"], models[2].optimizer.state_dict()["buffers"]):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
        assert model.optimizer.t == models[2].optimizer.t == 1 + 2 * 7 + 1 + 4


def test_weight_updates_are_fused_only_where_the_step_allows(monkeypatch):
    """Fused: with a DenseStack (every layer Dense) all parameters, else the Dense weights of
    FUSED_UPDATE_MIN or more. Not fused: weight penalties (known only in the backward pass),
    clip_norm (the global gradient norm), optimizers other than Adam/AdamW, float64, batches
    beyond the fused kernel's depth, and builds without AVX-512."""
    X, y = blobs(64)

    def fused(layers=None, l2=0.0, **kw):
        model = fnn.Sequential(layers or [fnn.Dense(8, 300, activation="relu", l2=l2), fnn.Dense(300, 256),
                                          fnn.Dense(256, 3)], seed=0, **kw)
        model.train_step(X, y)
        return model._fused_context(64)[1], model

    def dense_with_dropout():
        return [fnn.Dense(8, 300, activation="relu"), fnn.Dense(300, 256), fnn.Dropout(0.0), fnn.Dense(256, 3)]

    ranges, model = fused()
    off_stack, other = fused(dense_with_dropout())
    if FUSES:
        assert ranges == tuple((start, stop) for _, _, start, stop, _ in model._specs)
        W = other.layers[1].params["W"]    # 300 x 256 >= FUSED_UPDATE_MIN; 8 x 300, 256 x 3 below
        start = (W.ctypes.data - other.parameters.ctypes.data) // 4
        assert off_stack == ((start, start + W.size),)
        assert not model._fused_context(dense.FUSED_ADAM_MAX_BATCH + 1)[1]   # batches too deep
    assert not fused(l2=1e-3)[0]
    model.layers[2].l1 = 1e-4                       # a penalty set after construction
    assert not model._fused_context(64)[1]
    assert not fused(optimizer=fnn.optim.Adam(clip_norm=1.0))[0]
    assert not fused(optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9))[0]
    assert not fused(optimizer=fnn.optim.RMSprop())[0]
    assert not fused(dtype="float64")[0]
    monkeypatch.setattr(fnn.model, "FUSED_UPDATE_MIN", 1 << 30)
    assert not fused(dense_with_dropout())[0]


def test_fused_step_with_a_non_finite_loss_changes_nothing(monkeypatch):
    """The loss is known before the backward pass that would update the weights: a diverged
    step raises and leaves weights and optimizer state as they were."""
    monkeypatch.setattr(fnn.model, "FUSED_UPDATE_MIN", 1)
    X, y = blobs(64)
    model = small_model()
    model.train_step(X, y)
    assert bool(model._fused_context(64)[1]) == FUSES
    model.layers[1].params["W"][...] *= 1e4       # outputs overflow for inputs near float32's limit
    before, state = model.parameters.copy(), model.optimizer.state_dict()
    with pytest.raises(FloatingPointError, match="not updated"):
        model.train_step(X * np.float32(3e37), y)
    np.testing.assert_array_equal(model.parameters, before)
    assert model.optimizer.t == state["t"]
    for name, value in model.optimizer.state_dict()["buffers"][0].items():
        np.testing.assert_array_equal(value, state["buffers"][0][name])


@pytest.mark.parametrize("case", ["labels-weights-smoothing", "probabilities", "mse", "sgd-frozen-l2"])
def test_dense_stack_trains_as_the_layers_do(case, dtype, n_threads):
    """A network of Dense layers runs each pass as one DenseStack call (with softmax
    cross-entropy on labels, the loss inside the backward call): the same weights, optimizer
    state and losses as the layers' own passes, bit for bit, with sample weights, label
    smoothing, probability targets, another loss, a frozen layer and a penalty."""
    X, y = blobs(150)
    rng = np.random.default_rng(1)
    loss = {"labels-weights-smoothing": fnn.losses.SoftmaxCrossEntropy(label_smoothing=0.1),
            "mse": "mse"}.get(case, "softmax_cross_entropy")
    targets = {"probabilities": rng.dirichlet(np.ones(3), 150), "mse": rng.standard_normal((150, 3))}.get(case, y)
    weights = rng.random(150) + 0.1 if case == "labels-weights-smoothing" else None
    models, histories = [], []
    for stack in (True, False):
        optimizer = fnn.optim.SGD(lr=0.05, momentum=0.9) if case == "sgd-frozen-l2" else fnn.optim.Adam(lr=1e-2)
        model = fnn.Sequential([fnn.Dense(8, 33, activation="relu", l2=1e-3 if case == "sgd-frozen-l2" else 0.0),
                                fnn.Dense(33, 17, activation="elu"), fnn.Dense(17, 3)],
                               loss=loss, optimizer=optimizer, dtype=dtype, seed=3)
        if case == "sgd-frozen-l2":
            model.layers[1].trainable = False
        model._all_dense = stack
        with fnn.threads(n_threads):
            histories.append(model.fit(X, targets, epochs=3, batch_size=32, verbose=0, sample_weight=weights)
                             .history["loss"])
            histories[-1].append(model.train_step(X[:40], targets[:40]))
        assert (model._dense_stack(32) is not None) == stack
        models.append(model)
    assert histories[0] == histories[1]
    np.testing.assert_array_equal(models[0].parameters, models[1].parameters)
    for a, b in zip(models[0].optimizer.state_dict()["buffers"], models[1].optimizer.state_dict()["buffers"]):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
