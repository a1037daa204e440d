"""Thread control: one setting for fastnn's OpenMP kernels, BLAS kept single-threaded inside.

fastnn parallelizes over row and column blocks itself and calls BLAS single-threaded
from each OpenMP thread, so that only one thread pool is ever active (two pools that
alternate, OpenMP's and OpenBLAS's, spin against each other). BLAS threads are limited
with threadpoolctl only while fastnn runs, and restored afterwards.

libgomp is not fork-safe: after fastnn has run threads, start worker processes with
the "spawn" (or "forkserver") start method, not "fork".
"""
import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

from ._core import parallel as _parallel

__all__ = ["get_num_threads", "set_num_threads", "threads", "available_cpus"]

_state = threading.local()
_default = None
_blas = None  # the BLAS libraries' controllers, found once


def available_cpus():
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _check(n):
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"n_threads must be a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}; use fastnn.available_cpus() for all cores")
    return n


def _initial_default():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return available_cpus()


def get_num_threads():
    """Threads fastnn's kernels use: set_num_threads / threads(n), else OMP_NUM_THREADS,
    else the CPUs available to this process."""
    global _default
    n = getattr(_state, "n", None)
    if n is not None:
        return n
    if _default is None:
        _default = _initial_default()
    return _default


def set_num_threads(n):
    """Set the number of threads for fastnn's kernels (this process, all threads)."""
    global _default
    _default = _check(n)


@contextlib.contextmanager
def threads(n):
    """Use n threads inside the block (this Python thread only): `with fastnn.threads(1): ...`."""
    n = _check(n)
    previous = getattr(_state, "n", None)
    _state.n = n
    try:
        yield n
    finally:
        _state.n = previous


def _blas_controllers():
    global _blas
    if _blas is None:
        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


@contextlib.contextmanager
def blas_single_threaded():
    """Limit BLAS to one thread for the block (re-entrant; cheap when nested)."""
    depth = getattr(_state, "blas_depth", 0)
    _state.blas_depth = depth + 1
    saved = None
    if depth == 0:
        saved = [(lib, lib.num_threads) for lib in _blas_controllers()]
        for lib, count in saved:
            if count != 1:
                lib.set_num_threads(1)
    try:
        yield
    finally:
        _state.blas_depth = depth
        if saved:
            for lib, count in saved:
                if count != 1:
                    lib.set_num_threads(count)


def openmp_enabled():
    """True when fastnn's core was compiled with OpenMP (otherwise every kernel is serial)."""
    return _parallel.openmp_enabled()
