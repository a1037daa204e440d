"""The compiled core: it imports, runs on two OpenMP threads, and its GEMM wrapper is right."""
import itertools
import os

import numpy as np
import pytest

import fastnn
from fastnn._core import _blas, parallel
from conftest import assert_close

# CI also builds the core without OpenMP and without -march=native and runs the
# kernel tests on it with FASTNN_SERIAL_BUILD=1.
SERIAL_BUILD = os.environ.get("FASTNN_SERIAL_BUILD") == "1"
# ... and with -DFNN_NO_MATCH_KEYS (the pairs' scalar matching, as on AVX-512 CPUs without
# VPOPCNTDQ), running the kernel and model tests with FASTNN_NO_MATCH_KEYS=1.
NO_MATCH_KEYS = os.environ.get("FASTNN_NO_MATCH_KEYS") == "1"


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


@pytest.mark.skipif(not NO_MATCH_KEYS, reason="checks the build without match keys (FASTNN_NO_MATCH_KEYS=1)")
def test_build_without_match_keys_takes_the_scalar_matching():
    assert not _blas.MATCH_KEYS


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


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_own_kernels_match_numpy(trans_a, trans_b, dtype):
    """The shapes fastnn's own kernels take (alpha 1, beta 0), across the tile edges: 6-row
    tiles, vectors of 16 floats or 8 doubles, strips of 4 vectors, 128-deep k blocks; for C of
    2 MiB or more (or 1 MiB and k > 384), NN/TN blocks of B of at most 784 KiB, columns split
    evenly in multiples of 64 floats or 32 doubles, and k blocks of up to 448, NT k blocks of
    up to 1024; tiles reading B from L2 prefetch it; TN products whose C is narrower than a
    vector computed as C^T = B^T A."""
    rng = np.random.default_rng(1)
    shapes = list(itertools.product([4, 7, 73, 145], [1, 10, 17, 33, 64, 130], [0, 1, 17, 129, 300]))
    shapes.append((1030, 520, 1100))   # C of >= 2 MiB: 2 (float) or 3 (double) column blocks, 3 k blocks
    shapes.append((4099, 130, 301))    # C of >= 2 MiB: one narrow column block
    shapes.append((1100, 500, 262))    # C of >= 2 MiB, 262-deep: one 512-column block (float), two (double)
    shapes.append((700, 400, 450))     # C of 1-2 MiB (float), k > 384: the large blocking, 2 k blocks
    shapes.append((300, 5, 129))       # C narrower than a vector of doubles too: TN computes C^T
    for m, n, k in shapes:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
        c = np.full((m, n), np.nan, dtype)  # beta = 0: never read
        expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
        _blas.gemm_rowmajor(a, b, c, trans_a, trans_b)
        assert_close(c, expected, dtype, scale=max(1.0, k))
        blas = np.empty_like(c)
        _blas.gemm_rowmajor(a, b, blas, trans_a, trans_b, blas=True)
        assert_close(blas, expected, dtype, scale=max(1.0, k))
        split = np.full_like(c, np.nan)
        _blas.gemm_rowmajor(a, b, split, trans_a, trans_b, n_threads=2)
        assert_close(split, expected, dtype, scale=max(1.0, k))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,n,k", [(1027, 520, 900), (250, 200, 300)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_gemm_skips_all_zero_steps_exactly(dtype, trans_a, m, n, k, n_threads):
    """Products of two strips of B or more skip the steps p at which a 6-row tile of op(A) is
    all zero (blank pixels, ReLU outputs): in packed panels of A^T, and in A read in place
    after each tile's first strip; for C of 2 MiB or more (first shape) and under (second).
    Tiles here have many such steps (skipped), few (the dense tile), or only such steps (no
    step left); the last tile (partial) and strip (8 columns) are dense; a NaN or infinity in
    A is a nonzero step, so its row stays NaN or infinite. C is the dense product's."""
    rng = np.random.default_rng(7)
    op_a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    tiles = op_a[:m // 6 * 6].reshape(-1, 6, k)
    for t in range(len(tiles)):
        tiles[t][:, rng.random(k) < (0.9, 0.5, 0.05, 1.0)[t % 4]] = 0
    op_a[-1, rng.random(k) < 0.7] = 0
    op_a[100, 37] = np.nan     # tile 16: 90% zero steps
    op_a[213, 280] = np.inf    # tile 35: all zero but this
    expected = op_a.astype(np.float64) @ b.astype(np.float64)
    c = np.full((m, n), np.nan, dtype)
    _blas.gemm_rowmajor(op_a.T.copy() if trans_a else op_a, b, c, trans_a, n_threads=n_threads)
    assert np.isnan(c[100]).all() and np.isinf(c[213]).all()
    finite = np.isfinite(expected).all(axis=1)
    assert finite.sum() == m - 2
    assert_close(c[finite], expected[finite], dtype, scale=k)
    zero_tiles = np.arange(3, len(tiles), 4)
    assert not c[:m // 6 * 6].reshape(-1, 6, n)[zero_tiles[zero_tiles != 35]].any()


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_gemm_skips_zero_steps_of_row_pairs_exactly(dtype, trans_a, trans_b, n_threads):
    """Products with C under 2 MiB and two strips of B or more take the rows of op(A) in pairs,
    each pair over only the steps where one of its two rows is nonzero (k blocks of up to 96,
    here three): pairs of adjacent rows, or of rows matched by their shared nonzero steps where
    those pairs share more zero steps (here the even rows are alike, and the odd ones); an odd
    row left over is computed alone. Pairs here have many zero steps, few, none left, or zeros
    in one row only; a block whose pairs have too few zero steps is computed in whole 6-row
    tiles; a NaN or infinity is a nonzero step. Each element of C is the same chain of FMAs as
    the dense product's, so C equals, bit for bit, the product of each 4 rows alone (the last
    5), and the float64 product to rounding."""
    rng = np.random.default_rng(11)
    m, n, k = 97, 150, 280
    op_a = rng.standard_normal((m, k)).astype(dtype)
    for pair in range(m // 2):   # zero fraction per pair: most, half, few, all, one row only
        rows = slice(2 * pair, 2 * pair + 2)
        kind = pair % 5
        if kind == 4:
            op_a[2 * pair, rng.random(k) < 0.8] = 0
        else:
            op_a[rows, rng.random(k) < (0.9, 0.5, 0.02, 1.0)[kind]] = 0
    op_a[60:80] *= np.where(np.arange(20)[:, None] % 2, np.arange(k) % 2, 1 - np.arange(k) % 2)   # alike: every other
    op_a[10, 200] = np.nan    # a pair with 90% zero steps
    op_a[46, 100] = np.inf    # a pair otherwise all zero
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    op_b = b.T if trans_b else b

    def product(rows):
        c = np.full((len(rows), n), -1.0, dtype)
        _blas.gemm_rowmajor(rows.T.copy() if trans_a else rows, b, c, trans_a, trans_b, n_threads=n_threads)
        return c

    c = product(op_a)
    expected = op_a.astype(np.float64) @ op_b.astype(np.float64)
    assert np.isnan(c[10]).all() and np.isinf(c[46]).all()
    finite = np.isfinite(expected).all(axis=1)
    assert finite.sum() == m - 2
    assert_close(c[finite], expected[finite], dtype, scale=k)
    assert not c[[2 * pair + r for pair in range(3, 30, 5) if pair != 23 for r in (0, 1)]].any()
    if not _blas.calls_blas(dtype, trans_a, trans_b, m, n, k):
        groups = [op_a[i:i + 4] for i in range(0, m - 5, 4)] + [op_a[m - 5:]]
        np.testing.assert_array_equal(c, np.concatenate([product(rows) for rows in groups]))

    # the whole of A dense: whole tiles
    dense = rng.standard_normal((m, k)).astype(dtype)
    c = np.full((m, n), -1.0, dtype)
    _blas.gemm_rowmajor(dense.T.copy() if trans_a else dense, b, c, trans_a, trans_b, n_threads=n_threads)
    assert_close(c, dense.astype(np.float64) @ op_b.astype(np.float64), dtype, scale=k)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("k", [100, 300], ids=["strips", "buffer"])
def test_gemm_tn_with_the_sparser_b_is_computed_as_its_transpose_exactly(dtype, n_threads, k):
    """C = A^T B where B has a larger share of zeros than A (by 1/8 or more; a weight gradient
    X^T dZ, dZ masked by ReLU) is computed as C^T = B^T A, whose pairs of rows skip B's zero
    steps, and transposed (strip by strip as they complete, or deeper, through a buffer of all
    of C^T): each element is the same chain of FMAs, so C equals, bit for bit, the NN product
    of A^T (copied) with B, and the float64 product to rounding; with the shares of zeros the
    other way round, the same."""
    rng = np.random.default_rng(12)
    m, n = 150, 130
    for sparse_b in (True, False):
        a = rng.standard_normal((k, m)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        (b if sparse_b else a)[rng.random((k, n) if sparse_b else (k, m)) < 0.6] = 0
        a[rng.random((k, m)) < 0.1] = 0
        c = np.full((m, n), np.nan, dtype)
        _blas.gemm_rowmajor(a, b, c, True, n_threads=n_threads)
        assert_close(c, a.T.astype(np.float64) @ b.astype(np.float64), dtype, scale=k)
        if not _blas.calls_blas(dtype, True, False, m, n, k):
            nn = np.full((m, n), np.nan, dtype)
            _blas.gemm_rowmajor(a.T.copy(), b, nn, n_threads=n_threads)
            np.testing.assert_array_equal(c, nn)


def test_gemm_rejects_mismatched_shapes():
    a = np.ones((3, 4))
    with pytest.raises(ValueError, match="shapes"):
        _blas.gemm_rowmajor(a, np.ones((5, 2)), np.ones((3, 2)))


def test_blas_threads_are_limited_exactly_when_a_step_calls_blas():
    """train_step limits BLAS's threads (and restores them) only when one of its products
    goes to BLAS: fewer than 4 rows, or a build without fastnn's AVX-512 kernels (float32 and
    float64 alike)."""
    from fastnn.threads import blas_single_threaded

    own = not _blas.calls_blas("float32", False, False, 64, 64, 64)
    small = fastnn.Sequential([fastnn.Dense(20, 30, activation="relu"), fastnn.Dense(30, 5)])
    assert (small._blas_guard(64) is not blas_single_threaded) == own
    assert small._blas_guard(2) is blas_single_threaded          # 2 rows: BLAS
    wide = fastnn.Sequential([fastnn.Dense(300, 300), fastnn.Dense(300, 5)])
    assert (wide._blas_guard(300) is not blas_single_threaded) == own   # dZ W^T, 300 x 300 x 300
    double = fastnn.Sequential([fastnn.Dense(20, 5)], dtype="float64")
    assert (double._blas_guard(64) is not blas_single_threaded) == own
    assert _blas.calls_blas("float64", False, False, 64, 64, 64) == (not own)
    with pytest.raises(TypeError, match="float32 or float64"):
        _blas.calls_blas("int64", False, False, 64, 64, 64)
    assert _blas.calls_blas("float32", True, True, 64, 64, 64)    # both transposed: BLAS
