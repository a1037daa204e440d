"""Datasets, input standardization, thread settings, schedules and the command line."""
import gzip
import os

import numpy as np
import pytest

import fastnn as fnn
from fastnn import datasets
from fastnn.__main__ import main


def test_load_digits_split_and_ranges():
    (X, y), (Xt, yt) = datasets.load_digits()
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.shape[1] == 64 and len(X) + len(Xt) == 1797 and len(Xt) == pytest.approx(360, abs=5)
    assert X.min() >= 0 and X.max() <= 1
    assert set(np.unique(yt)) == set(range(10))
    (X2, _), _ = datasets.load_digits()
    np.testing.assert_array_equal(X, X2)


def _write_idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int32, 0x0C), (np.float32, 0x0D)])
def test_load_idx_round_trip(tmp_path, suffix, dtype, code):
    a = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    _write_idx(path, a, code)
    b = datasets.load_idx(path)
    assert b.shape == a.shape and b.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, b)


def test_load_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        datasets.load_idx(bad)
    short = tmp_path / "short.idx"
    _write_idx(short, np.arange(10, dtype=np.uint8), 0x08)
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        datasets.load_idx(short)


def test_fashion_mnist_from_a_directory_and_missing_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for stem, arr, code in [("train-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)), 0x08),
                            ("train-labels-idx1-ubyte", rng.integers(0, 10, 5), 0x08),
                            ("t10k-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28)), 0x08),
                            ("t10k-labels-idx1-ubyte", rng.integers(0, 10, 3), 0x08)]:
        _write_idx(tmp_path / (stem + ".gz"), arr.astype(np.uint8), code)
    (X, y), (Xt, yt) = datasets.load_fashion_mnist(tmp_path)
    assert X.shape == (5, 784) and Xt.shape == (3, 784) and X.dtype == np.float32 and y.dtype == np.int64
    assert 0 <= X.min() and X.max() <= 1
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist()


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    (X, y), (Xt, yt) = datasets.load_fashion_mnist()
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert np.bincount(y).tolist() == [6000] * 10


def test_load_file_npz_and_csv(tmp_path):
    X, y = np.arange(40, dtype=float).reshape(10, 4), np.arange(10) % 2
    np.savez(tmp_path / "d.npz", X=X, y=y)
    (a, b), (c, d) = datasets.load_file(tmp_path / "d.npz")
    assert len(a) + len(c) == 10
    np.savetxt(tmp_path / "d.csv", np.hstack([X, y[:, None]]), delimiter=",")
    (a, b), (c, d) = datasets.load_file(tmp_path / "d.csv")
    assert a.shape[1] == 4 and set(b) | set(d) == {0, 1}
    with pytest.raises(ValueError, match="use .npz or .csv"):
        datasets.load_file(tmp_path / "d.txt")


def test_standardizer():
    X = np.array([[1.0, 5.0, 3.0], [3.0, 5.0, 1.0], [5.0, 5.0, 2.0]])
    s = fnn.Standardizer().fit(X)
    Z = s.transform(X, dtype=np.float64)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Z[:, [0, 2]].std(axis=0), 1)
    np.testing.assert_array_equal(Z[:, 1], 0)          # constant feature: centred, not divided by 0
    np.testing.assert_allclose(s.inverse_transform(Z), X)
    with pytest.raises(ValueError, match="3 features but the model expects 3|2 features"):
        s.transform(X[:, :2])
    with pytest.raises(RuntimeError, match="not fitted"):
        fnn.Standardizer().transform(X)


def test_thread_settings():
    default = fnn.get_num_threads()
    assert default >= 1
    with fnn.threads(1):
        assert fnn.get_num_threads() == 1
        with fnn.threads(2):
            assert fnn.get_num_threads() == 2
        assert fnn.get_num_threads() == 1
    assert fnn.get_num_threads() == default
    fnn.set_num_threads(1)
    try:
        assert fnn.get_num_threads() == 1
    finally:
        fnn.set_num_threads(default)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_threads must be >= 1"):
            fnn.set_num_threads(bad)
    with pytest.raises(TypeError, match="positive integer"):
        fnn.set_num_threads(1.5)
    assert fnn.available_cpus() >= 1


def test_blas_threads_are_restored_after_training():
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    model = fnn.Sequential([fnn.Dense(4, 2)])
    model.fit(np.ones((8, 4)), np.arange(8) % 2, verbose=0)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


SCHEDULES = [
    (fnn.schedules.StepDecay(1.0, 3, 0.5), [1, 1, 1, 0.5, 0.5, 0.5, 0.25]),
    (fnn.schedules.MultiStepDecay(1.0, [2, 5], 0.1), [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]),
    (fnn.schedules.ExponentialDecay(2.0, 0.5), [2, 1, 0.5, 0.25, 0.125, 0.0625, 0.03125]),
    (fnn.schedules.CosineAnnealing(1.0, 4, 0.0), [1, 0.8535534, 0.5, 0.1464466, 0, 0, 0]),
    (fnn.schedules.CosineAnnealingWarmRestarts(1.0, 2, 2), [1, 0.5, 1, 0.8535534, 0.5, 0.1464466, 1]),
    (fnn.schedules.LinearDecay(1.0, 4, 0.2), [1, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2]),
]


@pytest.mark.parametrize("schedule,expected", SCHEDULES,
                         ids=lambda s: type(s).__name__ if not isinstance(s, list) else "")
def test_schedules(schedule, expected):
    np.testing.assert_allclose([schedule(k) for k in range(7)], expected, rtol=1e-6, atol=1e-12)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))

    def torch_lrs(make, steps=40):
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return lrs

    S = torch.optim.lr_scheduler
    pairs = [
        (fnn.schedules.StepDecay(0.1, 7, 0.3), lambda o: S.StepLR(o, 7, 0.3)),
        (fnn.schedules.ExponentialDecay(0.1, 0.9), lambda o: S.ExponentialLR(o, 0.9)),
        (fnn.schedules.CosineAnnealing(0.1, 40, 0.001), lambda o: S.CosineAnnealingLR(o, 40, 0.001)),
        (fnn.schedules.CosineAnnealingWarmRestarts(0.1, 5, 2, 0.001),
         lambda o: S.CosineAnnealingWarmRestarts(o, 5, 2, 0.001)),
        (fnn.schedules.OneCycle(0.1, 40), lambda o: S.OneCycleLR(o, 0.1, total_steps=40)),
    ]
    for ours, make in pairs:
        np.testing.assert_allclose([ours(k) for k in range(40)], torch_lrs(make), rtol=1e-6, err_msg=repr(ours))


def test_command_line_trains_digits_and_saves(tmp_path, capsys):
    path = tmp_path / "digits.npz"
    assert main(["train", "--epochs", "30", "--verbose", "0", "--threads", "2", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy")[1].split()[0])
    assert accuracy >= 0.95
    model = fnn.load(path)
    assert model.layers[0].in_features == 64


def test_command_line_errors_and_help(capsys):
    assert main(["train", "--dataset", "nope.txt", "--verbose", "0"]) == 2
    assert "use .npz or .csv" in capsys.readouterr().err
    assert main(["train", "--optimizer", "adamx", "--epochs", "1", "--verbose", "0"]) == 2
    assert "unknown optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--hidden" in capsys.readouterr().out


def test_metrics():
    assert fnn.metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    np.testing.assert_array_equal(fnn.metrics.confusion_matrix([0, 1, 2, 2], [0, 1, 1, 2]),
                                  [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match="same shape"):
        fnn.metrics.accuracy([0, 1], [0])
