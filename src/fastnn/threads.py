"""Thread control: one setting for fastnn's OpenMP kernels, BLAS kept single-threaded inside.

fastnn parallelizes over row and column blocks itself and runs one single-threaded GEMM
per OpenMP thread (its own kernel, or BLAS), so that only one thread pool is ever
active (two pools that alternate, OpenMP's and OpenBLAS's, spin against each other). BLAS
threads are limited with threadpoolctl only while fastnn runs passes that call BLAS, and
restored afterwards.

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


class _BlasLibrary:
    """get/set of one BLAS library's thread count, resolved once.

    threadpoolctl finds the libraries; for OpenBLAS with its own (pthreads) threading
    layer, the C functions are looked up once here, because threadpoolctl resolves the
    symbol again on every call, which costs microseconds in a training step.
    """

    def __init__(self, controller):
        self.get, self.set = controller.get_num_threads, controller.set_num_threads
        if controller.internal_api == "openblas" and getattr(controller, "threading_layer", "") != "openmp":
            lookup = getattr(controller, "_get_symbol", None)
            get = lookup("openblas_get_num_threads") if lookup else None
            set_ = lookup("openblas_set_num_threads") if lookup else None
            if get is not None and set_ is not None:
                self.get, self.set = get, set_


def _blas_libraries():
    global _blas
    if _blas is None:
        _blas = [_BlasLibrary(c) for c in ThreadpoolController().select(user_api="blas").lib_controllers]
    return _blas


class _BlasSingleThreaded:
    """Context manager limiting BLAS to one thread (re-entrant: nested uses cost nothing).

    A plain class rather than @contextmanager: the training step enters it once per call
    and must not allocate.
    """

    def __enter__(self):
        depth = getattr(_state, "blas_depth", 0)
        _state.blas_depth = depth + 1
        if depth == 0:
            saved = []
            for lib in _blas_libraries():
                count = lib.get()
                if count != 1:
                    lib.set(1)
                    saved.append((lib, count))
            _state.blas_saved = saved
        return self

    def __exit__(self, *exc):
        _state.blas_depth -= 1
        if _state.blas_depth == 0:
            for lib, count in _state.blas_saved:
                lib.set(count)
            _state.blas_saved = None
        return False


blas_single_threaded = _BlasSingleThreaded()


def openmp_enabled():
    """True when fastnn's core was compiled with OpenMP (otherwise every kernel is serial)."""
    return _parallel.openmp_enabled()
