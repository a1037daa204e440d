"""The benchmark's verdicts (bench/run.py, bench/e2e.py) on made-up measurements: each
target of the performance issue is judged, and the missed ones are named."""
import importlib.util
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench")
sys.path.insert(0, BENCH)   # the scripts import their shared helpers as `common`


def _load(script):
    spec = importlib.util.spec_from_file_location(f"bench_{script}", os.path.join(BENCH, f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run, e2e = _load("run"), _load("e2e")


def _row(config, threads, fastnn, ratio_gemm, ratio_torch):
    return {"config": config, "threads": threads, "batch": 64, "fastnn": fastnn, "gemm": fastnn / ratio_gemm,
            "torch_fused": fastnn * ratio_torch, "torch": None, "numpy": fastnn * 3,
            "ratio_gemm": ratio_gemm, "ratio_torch_fused": ratio_torch, "ratio_torch": None,
            "ratio_numpy": 3.0, "ratio_own_openblas": 1.0, "ratio_mkl_openblas": None}


def test_step_targets_and_speedup():
    rows = [_row("small", 1, 1e-4, 1.59, 3.1), _row("wide", 1, 0.1, 1.04, 1.0), _row("wide", 2, 0.06, 1.06, 1.1)]
    table = run.report(rows)
    assert [t["met"] for t in run.step_targets(rows[0])] == [True, True]
    assert [t["met"] for t in run.step_targets(rows[2])] == [False, True]
    (speedup,) = run.speedup_targets(rows)
    assert speedup["value"] == pytest.approx(0.1 / 0.06) and not speedup["met"]
    assert "2-thread speedup on wide: 1.67 (MISSED (>= 1.8))" in table
    text = run.summary([t for r in rows for t in run.step_targets(r)] + [speedup])
    assert text.startswith("5 of 7 targets met; missed: wide/2t fastnn/gemm 1.060 (<= 1.05)")
    assert "2-thread speedup wide 1.667 (>= 1.8)" in text


def test_speedup_needs_both_thread_counts():
    assert run.speedup_targets([_row("wide", 1, 0.1, 1.0, 1.0)]) == []


def test_end_to_end_targets():
    fastnn = {"s_per_epoch": 1.0, "epoch_times": [1.0, 1.2], "accuracy": 0.889, "predict_per_s": 1.1e5,
              "peak_rss_mb": 300}
    torch = {"s_per_epoch": 2.0, "epoch_times": [2.0, 2.0], "accuracy": 0.887, "predict_per_s": 1e5,
             "peak_rss_mb": 600}
    sklearn = {"s_per_epoch": 3.0, "epoch_times": [3.0, 3.0], "accuracy": 0.880, "predict_per_s": 1e5,
               "peak_rss_mb": 400}
    judged = {t["target"]: t for t in e2e.targets({"fastnn": fastnn, "torch": torch, "sklearn": sklearn})}
    assert {k: v["met"] for k, v in judged.items()} == {
        "epoch time fastnn/torch": True, "accuracy |fastnn - torch|": True,
        "predict throughput fastnn/torch": False, "peak RSS fastnn/torch": True,
        "epoch time fastnn/sklearn": False, "accuracy |fastnn - sklearn|": False}
    assert judged["epoch time fastnn/sklearn"]["value"] == pytest.approx(1.1 / 3)
    assert "predict throughput fastnn/torch: 1.1000 (MISSED (>= 1.2))" in e2e.report({"fastnn": fastnn, "torch": torch})
    assert e2e.targets({"fastnn": {"error": "worker exited with 1"}, "torch": torch}) == []


def test_epoch_time_ratio_is_that_of_the_total_times():
    """fastnn's first epochs are its slowest (fewer ReLU zeros to skip): the ratio of seconds
    per epoch is that of the totals, not the median per-epoch ratio (the middle epochs')."""
    fastnn = {"s_per_epoch": 1.2, "epoch_times": [1.8, 1.0, 0.8], "accuracy": 0.889, "predict_per_s": 1.3e5,
              "peak_rss_mb": 300}
    sklearn = {"s_per_epoch": 3.0, "epoch_times": [3.0, 3.0, 3.0], "accuracy": 0.886, "predict_per_s": 1e5,
               "peak_rss_mb": 400}
    results = {"fastnn": fastnn, "sklearn": sklearn}
    judged = {t["target"]: t for t in e2e.targets(results)}
    assert judged["epoch time fastnn/sklearn"]["value"] == pytest.approx(3.6 / 9)
    assert "per epoch fastnn/sklearn: 0.600 0.333 0.267 (median 0.3333)" in e2e.report(results)


def test_accuracy_is_averaged_over_seeds():
    results = {"fastnn": {"accuracy": 0.88, "s_per_epoch": 1.0}, "torch": {"accuracy": 0.89},
               "sklearn": {"error": "worker exited with 1"}}
    e2e.average_seeds(results, {"fastnn": [0.89, 0.87], "torch": [None, 0.88]})
    assert results["fastnn"]["accuracies"] == [0.88, 0.89, 0.87]
    assert results["fastnn"]["accuracy"] == pytest.approx(0.88)
    assert results["torch"] == {"error": "the seed 1 run failed"}
    assert results["sklearn"] == {"error": "worker exited with 1"}
    assert "0.8800 0.8900 0.8700" in e2e.report({"fastnn": {**results["fastnn"], "predict_per_s": 1e5,
                                                              "peak_rss_mb": 300}})


def test_products_floor_is_reported_not_judged():
    fastnn = {"s_per_epoch": 1.2, "epoch_times": [1.2, 1.3], "accuracy": 0.889, "predict_per_s": 1.3e5,
              "peak_rss_mb": 300}
    sklearn = {"s_per_epoch": 3.0, "epoch_times": [3.0, 4.0], "accuracy": 0.886, "predict_per_s": 1e5,
               "peak_rss_mb": 400}
    products = {"s_per_epoch": 1.0, "epoch_times": [1.0, 1.0], "peak_rss_mb": 700}
    openblas = {"s_per_epoch": 1.5, "epoch_times": [1.5, 1.5], "peak_rss_mb": 700}
    results = {"fastnn": fastnn, "sklearn": sklearn, "products": products, "openblas": openblas}
    text = e2e.report(results)
    assert "products    1.000  (fastnn's products alone)" in text
    assert "openblas    1.500  (the same products through OpenBLAS)" in text
    assert "epoch time fastnn/its products: 1.2500" in text
    assert "epoch time products/sklearn: 0.2857 (the least fastnn/sklearn its GEMM allows)" in text
    assert "products/torch" not in text
    assert [t["target"] for t in e2e.targets(results)] == ["epoch time fastnn/sklearn", "accuracy |fastnn - sklearn|"]
