"""Elementwise kernels on saturated inputs, whose exact results would be subnormal floats,
against the same inputs in the usual range: fastnn's kernels and PyTorch's, taking turns.

An operation that reads or writes a subnormal float costs the CPU a microcode assist
(~100+ cycles) unless flush-to-zero is on. Saturated units are common in practice: a
sigmoid layer fed unstandardized pixels, confident logits under binary cross-entropy.
Inputs: 256 x 512 values uniform in [-5, 5] ("usual") or in [-100, -88] (float32) /
[-740, -709] (float64), where e^z is subnormal ("saturated"); 1 thread; microseconds per
call (median of rounds) and the saturated / usual slowdown of each library.

    python bench/saturated.py [--rounds 9]
"""
import argparse
import statistics

import numpy as np

from common import per_round
from fastnn._core import activations as act
from fastnn._core import losses

SATURATED = {np.float32: (-100.0, -88.0), np.float64: (-740.0, -709.0)}


def fastnn_ops(z, dtype):
    y, dz, ones = np.empty_like(z), np.empty_like(z), np.ones_like(z)
    rows = z.reshape(256, -1)
    grad, row_loss, zeros = np.empty_like(rows), np.empty(len(rows)), np.zeros_like(rows)
    bce = losses.ELEMENTWISE["binary_cross_entropy"]
    ops = {}
    for name in ("sigmoid", "softplus", "silu"):
        kind = act.KINDS["swish" if name == "silu" else name]
        ops[f"{name} forward"] = lambda k=kind: act.activation_forward(z, y, k, 1.0, 1)
        ops[f"{name} backward"] = lambda k=kind: act.activation_backward(y, ones, dz, z, k, 1.0, 1)
    ops["bce with logits"] = lambda: losses.elementwise_loss(rows, zeros, grad, row_loss, None, bce, 1.0, 1)
    return ops


def torch_ops(z, dtype):
    import torch

    zt = torch.from_numpy(z).requires_grad_()
    rows = torch.from_numpy(z.reshape(256, -1))
    zeros, ones = torch.zeros_like(rows), torch.ones_like(zt)
    ops = {}
    for name in ("sigmoid", "softplus", "silu"):
        f = getattr(torch.nn.functional, name)
        with torch.no_grad():
            ops[f"{name} forward"] = lambda f=f: f(zt.detach())
        out = f(zt)
        ops[f"{name} backward"] = lambda out=out: torch.autograd.grad(out, zt, ones, retain_graph=True)
    ops["bce with logits"] = lambda: torch.nn.functional.binary_cross_entropy_with_logits(rows, zeros)
    return ops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
        libraries = {"fastnn": fastnn_ops, "torch": torch_ops}
    except ImportError:
        libraries = {"fastnn": fastnn_ops}
    rng = np.random.default_rng(0)
    print(f"{'dtype':<8} {'op':<18}" + "".join(f" {lib + ' usual':>13} {lib + ' saturated':>17} {'slowdown':>8}"
                                             for lib in libraries))
    for dtype, (lo, hi) in SATURATED.items():
        inputs = {"usual": rng.uniform(-5, 5, 256 * 512).astype(dtype),
                  "saturated": rng.uniform(lo, hi, 256 * 512).astype(dtype)}
        ops = {(lib, case): make(z, dtype) for lib, make in libraries.items() for case, z in inputs.items()}
        for op in ops["fastnn", "usual"]:
            keys = list(ops)
            times = dict(zip(keys, per_round([ops[key][op] for key in keys], args.rounds, calls=5)))
            line = f"{dtype.__name__:<8} {op:<18}"
            for lib in libraries:
                usual, saturated = (statistics.median(times[lib, case]) * 1e6 for case in ("usual", "saturated"))
                line += f" {usual:>13.0f} {saturated:>17.0f} {saturated / usual:>8.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
