"""Benchmark depth on the real digit classifier: percentiles, throughput, load time, ISA, noise."""

from __future__ import annotations

import lowprec_core as lp
from lowprec_core._benchmark import NOISY_CV, NOISY_DRIFT, cpu_description
from lowprec_core._config import BenchmarkConfig


def test_report_carries_percentiles_throughput_machine_and_a_noise_verdict(demo, tmp_path):
    lp.quantize(demo["model"], tmp_path / "int8.onnx", data=demo["calib"])
    report = lp.benchmark(demo["model"], tmp_path / "int8.onnx", config=BenchmarkConfig(batches=(1, 16), repeats=10))
    assert report.providers == ["CPUExecutionProvider"] and report.onnxruntime
    assert (report.cpu, report.isa) == cpu_description()
    assert report.fp32_load_ms > 0 and report.int8_load_ms > 0 and report.peak_rss_mb > 0
    for row in report.results:
        assert row.fp32_median_ms <= row.fp32_p90_ms <= row.fp32_p99_ms
        assert row.int8_median_ms <= row.int8_p90_ms <= row.int8_p99_ms
        assert row.int8_per_s == row.batch * 1e3 / row.int8_median_ms
        assert row.repeats in (10, 20, 40)  # measured longer (twice at most) only when noisy
        assert row.noisy == (row.cv > NOISY_CV or row.drift > NOISY_DRIFT)
        assert (row.repeats > 10) or not row.noisy


def test_two_runs_agree_on_the_speedup_within_10_percent_or_say_they_are_noisy(demo, tmp_path):
    lp.quantize(demo["model"], tmp_path / "int8.onnx", data=demo["calib"])
    config = BenchmarkConfig(batches=(1, 64), repeats=30)
    first, second = (lp.benchmark(demo["model"], tmp_path / "int8.onnx", config=config) for _ in range(2))
    for a, b in zip(first.results, second.results):
        assert (a.batch, a.threads) == (b.batch, b.threads)
        agree = abs(a.speedup - b.speedup) / ((a.speedup + b.speedup) / 2) <= 0.10
        assert agree or a.noisy or b.noisy, (a, b)


def test_interleaved_runs_each_round_in_the_balanced_order():
    """benchmark's FP32, runtime-default and INT8 sessions follow one another equally often."""
    import numpy as np

    from lowprec_core._benchmark import balanced_order, interleaved

    order: list[int] = []

    class _Logged:
        def __init__(self, index: int) -> None:
            self.index = index

        def run(self, names, feed):
            order.append(self.index)
            return []

    times = interleaved([_Logged(i) for i in range(3)], {"x": np.zeros(1)}, warmup=1, repeats=6)
    assert [len(t) for t in times] == [6, 6, 6]
    assert [order[i:i + 3] for i in range(3, len(order), 3)] == [balanced_order(3, r) for r in range(6)]


def test_threaded_sessions_are_timed_in_blocks_whose_first_run_is_untimed():
    """A threaded session right after another's run finds its workers parked: at more than one
    thread each session runs THREADED_BLOCK times in its turn and the handover run is not timed."""
    import numpy as np

    from lowprec_core._benchmark import THREADED_BLOCK, balanced_order, block_size, interleaved

    order: list[int] = []

    class _Slow:  # its first run of a turn is the slow one, as a parked pool's is
        def __init__(self, index: int) -> None:
            self.index = index

        def run(self, names, feed):
            if order and order[-1] != self.index:
                import time

                time.sleep(0.02)
            order.append(self.index)
            return []

    assert block_size(1) == 1 and block_size(8) == THREADED_BLOCK > 1
    times = interleaved([_Slow(0), _Slow(1)], {"x": np.zeros(1)}, warmup=0, repeats=6, block=THREADED_BLOCK)
    per_turn = THREADED_BLOCK - 1
    assert [len(t) for t in times] == [per_turn * -(-6 // per_turn)] * 2
    assert max(max(t) for t in times) < 10  # ms: no handover (20 ms) was timed
    turns = [order[i] for i in range(0, len(order), THREADED_BLOCK)]
    assert turns == [s for r in range(-(-6 // per_turn)) for s in balanced_order(2, r)]
    assert all(order[i:i + THREADED_BLOCK] == [order[i]] * THREADED_BLOCK for i in range(0, len(order), THREADED_BLOCK))
