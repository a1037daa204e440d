"""The compiled core: it imports, runs on two OpenMP threads, and its GEMM wrapper is right."""
import os

import numpy as np
import pytest

import fastnn
from fastnn._core import _blas, parallel
from conftest import assert_close

# CI also builds the core without OpenMP and without -march=native and runs the
# kernel tests on it with FASTNN_SERIAL_BUILD=1.
SERIAL_BUILD = os.environ.get("FASTNN_SERIAL_BUILD") == "1"


def test_core_modules_import():
    import fastnn._core.activations
    import fastnn._core.dense
    import fastnn._core.losses
    import fastnn._core.optim  # noqa: F401


@pytest.mark.skipif(SERIAL_BUILD, reason="this build was made without OpenMP on purpose")
def test_openmp_is_linked_and_runs_two_threads():
    assert fastnn.openmp_enabled(), "the core was built without OpenMP"
    assert parallel.threads_used(2) == 2
    assert parallel.threads_used(1) == 1


@pytest.mark.skipif(not SERIAL_BUILD, reason="checks the serial build (FASTNN_SERIAL_BUILD=1)")
def test_serial_build_runs_everything_on_one_thread():
    assert not fastnn.openmp_enabled()
    assert parallel.threads_used(2) == 1


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 3, 5), (129, 257, 3), (64, 1, 300)])
def test_gemm_matches_numpy(dtype, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = 0.5 * (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64) \
        + 2.0 * c
    _blas.gemm_rowmajor(a, b, c, trans_a, trans_b, 0.5, 2.0)
    assert_close(c, expected, dtype, scale=float(np.abs(expected).max()) * k)


def test_gemm_rejects_mismatched_shapes():
    a = np.ones((3, 4))
    with pytest.raises(ValueError, match="shapes"):
        _blas.gemm_rowmajor(a, np.ones((5, 2)), np.ones((3, 2)))
