import numpy as np
import pytest

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(got, ref, dtype, scale=None, rtol=None):
    """|got - ref| <= rtol * (|ref| + scale): relative to each value, with an absolute floor
    proportional to the magnitude of the terms that were summed (scale, default max|ref|)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    rtol = RTOL[dtype] if rtol is None else rtol
    if scale is None:
        scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * max(scale, 1e-30))


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request):
    return request.param


def readonly(a):
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a
