"""quantize --tune latency on the digit classifier: candidates, the kept one, and its rule."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _benchmark, _runtime, _tuning
from lowprec_core._cli import main
from lowprec_core._model_io import prepare

HEAD_TO_HEAD = _tuning._head_to_head  # the real one: the fixture below stands in for it in the search


@pytest.fixture(autouse=True)
def no_profiled_candidate(monkeypatch):
    """Whether the profile suggests a candidate depends on this machine's timings: here it never
    does (the profile still runs and costs every layer), except where a test forces it."""
    monkeypatch.setattr(_tuning, "PROFILE_GAIN", float("inf"))


@pytest.fixture(autouse=True)
def every_candidate_built(monkeypatch):
    """Whether the search's time bound leaves a candidate untried depends on how fast this
    machine builds and compiles: here it never does, except where a test forces it."""
    monkeypatch.setattr(_tuning, "SETUP_FLOOR", float("inf"))


@pytest.fixture(autouse=True)
def loop_verdicts_stand(monkeypatch):
    """Tests that force the loop's timings have the head-to-head check agree with them, except
    where a test forces it otherwise: this machine's timings are not theirs."""
    monkeypatch.setattr(_tuning, "_head_to_head", lambda first, second, samples, *handover: float("inf"))
    monkeypatch.setattr(_tuning, "_batch_gain", lambda first, second, large, *handover: float("inf"))


def test_the_latency_search_reports_every_candidate_and_its_choice_reproduces(demo, tmp_path, capsys):
    out, report = tmp_path / "tuned.onnx", tmp_path / "q.json"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out), "--tune", "latency",
                 "--report", str(report)]) == 0
    assert "latency search (onnxruntime, 1 thread(s)" in capsys.readouterr().out
    result = json.loads(report.read_text())
    tuning, config = result["tuning"], result["plan"]["config"]
    floors = [c["min_reduction"] for c in tuning["candidates"]]
    # The target's own floor is always measured; every plan quantizes some layer, so all-float is too.
    assert 64 in floors and floors[:-1] == sorted(floors[:-1]) and floors[-1] is None
    (chosen,) = [c for c in tuning["candidates"] if c["chosen"]]
    assert len(result["plan"]["nodes"]) == chosen["layers"]
    assert all(c["speedup"] > 0 and c["nmse"] >= 0 for c in tuning["candidates"]) and tuning["samples"] == _tuning.SAMPLES
    assert tuning["layer_costs"] == {}  # ORT runs float at f32: its layers are not profiled one by one
    # The choice is in the config: naming it gives the same bytes without a search.
    if chosen["min_reduction"] is None:
        named = ["--ignore", *config["ignore"]]
    else:
        assert config["min_reduction"] == chosen["min_reduction"]
        named = ["--min-reduction", str(chosen["min_reduction"])]
    again = tmp_path / "again.onnx"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(again), *named]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(("measured", "kept"), [
    ({(64, "target"): (2.0, 1.0), (256, "target"): (3.0, 2.0)}, (64, "target")),  # fastest, but twice the default's error
    ({(64, "target"): (2.0, 1.0), (256, "target"): (2.05, 0.5)}, (64, "target")),  # faster by less than the margin
    ({(64, "target"): (2.0, 1.0), (256, "target"): (2.5, 1.2)}, (256, "target")),  # clearly faster, error within the slack
    ({(64, "target"): (2.0, 1.0), (0, "all"): (2.6, 1.2), (256, "target"): (2.5, 0.1)}, (0, "all")),
    ({(64, "target"): (0.8, 1.0), (256, "target"): (0.9, 1.0)}, (256, "target")),  # all slower than FP32: the least slow
    ({(64, "target"): (0.8, 1.0), (256, "target"): (0.9, 1.0), _tuning.FLOAT: (1.0, 0.0)}, _tuning.FLOAT),  # FP32 wins
    # An INT8 default measured slower than FP32 gives way to float, however close: float is also exact.
    ({(64, "target"): (0.97, 1.0), _tuning.FLOAT: (1.0, 0.0)}, _tuning.FLOAT),
    ({(64, "target"): (1.02, 1.0), _tuning.FLOAT: (1.0, 0.0)}, (64, "target")),  # faster than FP32: the margin protects it
    ({(64, "target"): (1.2, 1.0), (256, "target"): (0.9, 0.1), _tuning.FLOAT: (1.0, 0.0)}, (64, "target")),
])
def test_the_fastest_candidate_within_the_defaults_error_is_kept(measured, kept):
    """The rule alone, on (speedup, output NMSE) per candidate; the default is (64, target)."""
    speedup = {k: v[0] for k, v in measured.items()}
    nmse = {k: v[1] for k, v in measured.items()}
    assert _tuning.choose((64, "target"), speedup, nmse) == kept


@pytest.mark.parametrize(("speedup", "meets", "kept"), [
    ({(64, "target"): 2.0, (0, "all"): 3.0, (256, "target"): 2.5}, {(0, "all"), (256, "target")}, (0, "all")),
    ({(64, "target"): 2.0, (0, "all"): 3.0, (256, "target"): 2.5}, {(256, "target")}, (256, "target")),  # the fastest misses
    ({(64, "target"): 2.0, (0, "all"): 3.0, (256, "target"): 2.05}, {(256, "target")}, (64, "target")),  # within the margin
    ({(64, "target"): 0.8, (256, "target"): 0.85, _tuning.FLOAT: 1.0}, {_tuning.FLOAT}, _tuning.FLOAT),
    ({(64, "target"): 0.98, _tuning.FLOAT: 1.0}, set(), _tuning.FLOAT),  # slower than FP32: float, unjudged (it is FP32)
])
def test_with_a_budget_the_fastest_candidate_that_meets_it_is_kept(speedup, meets, kept):
    """The budget replaces the output-error rule: clearly faster candidates are judged fastest
    first, and judging stops at the first that meets it (each judgement is a validation pass)."""
    nmse = {k: 10.0 for k in speedup}  # the output error no longer decides
    judged = []
    chosen = _tuning.choose((64, "target"), speedup, nmse, accept=lambda k: judged.append(k) or k in meets)
    assert chosen == kept
    faster = sorted((k for k in speedup if speedup[k] >= speedup[(64, "target")] * _tuning.SPEED_MARGIN and k != (64, "target")),
                    key=lambda k: -speedup[k])
    assert judged == faster[:faster.index(kept) + 1] if kept in faster else judged == faster


def test_candidates_try_integer_ops_only_where_the_runtime_has_them():
    assert _tuning.candidates(lp.QuantConfig()) == [(64, "target"), (0, "all"), (256, "target"), (64, "all")]
    assert _tuning.candidates(lp.QuantConfig(target="openvino")) == [(64, "target"), (0, "target"), (256, "target")]
    assert _tuning.candidates(lp.QuantConfig(min_reduction=256)) == [(256, "target"), (0, "all"), (64, "target"), (256, "all")]


class _Clock:
    """The clock _tuning.measure reads, advanced only by the fake sessions' runs: their times are
    exact, so the loop's decisions do not depend on how busy the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(_tuning, "time", fake)
    return fake


class _Fixed:
    """A session that takes a fixed time on `clock` and returns fixed outputs."""

    def __init__(self, clock: _Clock, seconds: float, outputs: list[np.ndarray]) -> None:
        self.clock, self.seconds, self.outputs, self.calls = clock, seconds, outputs, 0

    def run(self, names, feed):
        self.calls += 1
        self.clock.now += self.seconds
        return self.outputs


def test_measure_times_every_session_and_drops_those_far_behind_the_default(clock):
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    sessions = [_Fixed(clock, 0.006, [ref]), _Fixed(clock, 0.003, [ref * 1.1]), _Fixed(clock, 0.012, [ref]), _Fixed(clock, 0.0015, [ref, np.arange(3)])]
    times, nmse, _ = _tuning.measure(sessions, samples)
    assert [len(t) for t in times] == [_tuning.SAMPLES, _tuning.SAMPLES, _tuning.DROP_AFTER, _tuning.SAMPLES]
    assert np.median(times[0] / times[1]) == pytest.approx(2.0)
    assert nmse == [pytest.approx(0.01), 0.0, 0.0]  # integer outputs are not compared
    assert sessions[2].calls == _tuning.WARMUP + _tuning.DROP_AFTER  # the reference's run takes over ROUND_MS: once a round
    assert sessions[0].calls == _tuning.WARMUP + _tuning.SAMPLES  # its first run took ROUND_MS: no more runs to decide


def test_measure_at_several_threads_leaves_each_turns_handover_run_untimed(clock):
    """A threaded session's first run after another session's finds its pool parked (see
    _benchmark.THREADED_BLOCK): with `handover`, that run is made and not timed."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES

    class _Parked(_Fixed):
        def run(self, names, feed):
            handover = self.clock.last is not self
            self.clock.last = self
            self.seconds = 0.02 if handover else self.base  # 20 ms to wake, then its own time
            return super().run(names, feed)

    clock.last = None
    sessions = [_Parked(clock, 0.006, [ref]), _Parked(clock, 0.003, [ref])]
    for session, base in zip(sessions, (0.006, 0.003)):
        session.base = base
    times, _, _ = _tuning.measure(sessions, samples, handover=True)
    assert np.median(times[0] / times[1]) == pytest.approx(2.0)  # the handover is in neither
    times, _, _ = _tuning.measure(sessions, samples)
    assert abs(np.median(times[0] / times[1]) - 2.0) > 0.2  # timed with it, the ratio is the handovers' as much as the models'


def test_measure_stops_a_candidate_never_ahead_and_then_the_loop(clock):
    """A candidate as fast as the default is behind the margin in every round: after DROP_AFTER
    rounds it stops. The default, twice as fast as FP32 in every round, runs one round more
    (dropped candidates always have fewer) and the loop ends: nothing is left to decide."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    sessions = [_Fixed(clock, 0.006, [ref]), _Fixed(clock, 0.003, [ref]), _Fixed(clock, 0.003, [ref])]
    times, _, _ = _tuning.measure(sessions, samples)
    assert [len(t) for t in times] == [_tuning.DROP_AFTER + 1, _tuning.DROP_AFTER + 1, _tuning.DROP_AFTER]


def test_measure_keeps_timing_a_candidate_ahead_in_some_rounds(clock):
    """A candidate ahead of the default in one round of every two is not dropped at DROP_AFTER,
    and never behind in more than half of all rounds: it, the default and FP32 run every round."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES

    class _Alternating(_Fixed):
        def run(self, names, feed):
            self.seconds = 0.002 if self.calls % 2 else 0.003  # warm-up: 3 ms, then 2 ms, 3 ms, ...
            return super().run(names, feed)

    sessions = [_Fixed(clock, 0.006, [ref]), _Fixed(clock, 0.003, [ref]), _Alternating(clock, 0.003, [ref])]
    times, _, _ = _tuning.measure(sessions, samples)
    assert [len(t) for t in times] == [_tuning.SAMPLES] * 3
    # With the search's time bound spent, every session stops at once, after DROP_AFTER + 1 rounds,
    # or in the first round to end past the bound (the warm-up and four rounds take 58 ms, five 69 ms).
    for seconds, rounds in ((0.0, _tuning.DROP_AFTER + 1), (0.065, _tuning.DROP_AFTER + 2), (1.0, _tuning.SAMPLES)):
        sessions = [_Fixed(clock, 0.006, [ref]), _Fixed(clock, 0.003, [ref]), _Alternating(clock, 0.003, [ref])]
        times, _, reference = _tuning.measure(sessions, samples, seconds=seconds)
        assert [len(t) for t in times] == [rounds] * 3 and len(reference) == rounds


def test_measure_stops_a_fast_candidate_whose_own_error_rules_it_out(clock):
    """Twice as fast as the default but with 10x its output error: with its error its own
    (`exact`), it stops after DROP_AFTER rounds, and so does the loop; built from provisional
    statistics, it runs every round (its error in full is measured later)."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    for exact, rounds in (([2], _tuning.DROP_AFTER), ([], _tuning.SAMPLES)):
        sessions = [_Fixed(clock, 0.006, [ref]), _Fixed(clock, 0.003, [ref * 1.01]), _Fixed(clock, 0.0015, [ref * 1.0316])]
        times, nmse, reference = _tuning.measure(sessions, samples, exact=exact)
        assert nmse == [pytest.approx(1e-4, rel=1e-3), pytest.approx(1e-3, rel=0.01)]
        assert len(times[2]) == rounds and len(reference) == len(times[0]) == (rounds + 1 if exact else rounds)
    sessions[2].outputs = [ref * 1.012]  # 1.44x the default's error: within QUALITY_DROP of what it may have
    times, _, _ = _tuning.measure(sessions, samples, exact=[2])
    assert [len(t) for t in times] == [_tuning.SAMPLES] * 3


def test_measure_times_the_default_against_fp32_while_it_is_not_clearly_faster(clock):
    """A default within SPEED_MARGIN of FP32 leaves every float layer a choice: FP32 and the
    default run most rounds, not DROP_AFTER + 1."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    sessions = [_Fixed(clock, 0.006, [ref]), _Fixed(clock, 0.0059, [ref]), _Fixed(clock, 0.012, [ref])]
    times, _, _ = _tuning.measure(sessions, samples)
    rounds = _tuning.SAMPLES // 2 + 1
    assert [len(t) for t in times] == [rounds, rounds, _tuning.DROP_AFTER]


@pytest.mark.parametrize("n", range(1, 8))
def test_the_loops_orders_put_every_session_right_after_every_other_equally_often(n):
    rounds = n if n % 2 == 0 else 2 * n
    orders = [_benchmark.balanced_order(n, index) for index in range(rounds)]
    assert all(sorted(order) == list(range(n)) for order in orders)
    pairs = [pair for order in orders for pair in zip(order, order[1:])]
    assert sorted(set(pairs)) == [(a, b) for a in range(n) for b in range(n) if a != b]
    assert all(pairs.count(pair) == (1 if n % 2 == 0 else 2) for pair in set(pairs))
    assert orders == [_benchmark.balanced_order(n, index + rounds) for index in range(rounds)]  # then again


def test_measure_runs_each_round_in_the_balanced_order(clock):
    """Not FP32 first and the default second in every round (reversed every other): the loop
    timed candidates ahead of the default that run level with it alone (see balanced_order)."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    order: list[int] = []

    class _Logged(_Fixed):
        def __init__(self, index: int, seconds: float) -> None:
            super().__init__(clock, seconds, [ref])
            self.index = index

        def run(self, names, feed):
            order.append(self.index)
            return super().run(names, feed)

    sessions = [_Logged(0, 0.006), _Logged(1, 0.003), _Logged(2, 0.0028), _Logged(3, 0.0027)]  # both ahead by the margin
    times, _, _ = _tuning.measure(sessions, samples)
    assert [len(t) for t in times] == [_tuning.SAMPLES] * 4  # none dropped: the order is every round's
    rounds = [order[i:i + 4] for i in range(4, len(order), 4)]  # after the warm-up (one run a round: 6 ms >= ROUND_MS)
    assert rounds == [_benchmark.balanced_order(4, index) for index in range(_tuning.SAMPLES)]


def test_head_to_head_times_the_two_alone_in_turn(clock):
    """Each sample a round, each model run for ROUND_MS of the first's time, in an order reversed
    every other round: here the second twice as fast."""
    ref = np.ones(4, dtype=np.float32)
    first, second = _Fixed(clock, 0.001, [ref]), _Fixed(clock, 0.0005, [ref])
    gain = HEAD_TO_HEAD(first, second, [{"x": np.zeros(1)}] * 4)
    reps = round(_tuning.ROUND_MS / 1.0)
    assert gain == pytest.approx(2.0) and second.calls == 1 + 4 * reps and first.calls == 1 + 1 + 4 * reps  # one more: the repeats


@pytest.mark.parametrize(("head_to_head", "batch_gain", "kept"), [(1.0, None, False), (1.04, None, False), (2.0, 2.0, True), (2.0, 0.9, False)])
def test_a_candidate_faster_in_the_loop_is_kept_only_if_faster_again_head_to_head(tmp_path, monkeypatch, head_to_head, batch_gain, kept):
    """Timings forced: every layer quantized runs twice as fast as the default in the loop. It is
    kept only where the default and it, timed again alone, find it SPEED_MARGIN faster at batch 1
    and no slower beyond that on the tuning samples as one batch (timed only once batch 1 agrees);
    else the default stays and the search says why. Both measurements go into the report."""
    asked, stacked = [], []
    monkeypatch.setattr(_tuning, "_head_to_head", lambda first, second, samples, *handover: asked.append(len(samples)) or head_to_head)
    monkeypatch.setattr(_tuning, "_batch_gain", lambda first, second, large, *handover: stacked.append(large) or batch_gain)
    _, _, result, every, _ = _residual_search(tmp_path, monkeypatch, every_layer_seconds=0.25)
    tuning = result.tuning
    assert asked == [_tuning.SAMPLES] and tuning.head_to_head == head_to_head and tuning.head_to_head_batch == batch_gain
    assert len(stacked) == (batch_gain is not None) and all(next(iter(b.values())).shape[0] == _tuning.SAMPLES for b in stacked)
    assert every.chosen == kept and every.speedup == pytest.approx(4.0)
    config = result.plan.config
    assert (config.min_reduction, config.integer_ops) == ((0, every.integer_ops) if kept else (64, "target"))
    if kept:
        assert f"head to head it ran {head_to_head:.2f}x the speed of min_reduction 64" in tuning.reason
        assert "and 2.00x on the 10 tuning samples as one batch" in tuning.reason
    elif batch_gain is not None:
        assert "but 0.90x on the 10 tuning samples as one batch: slower where requests are batched" in tuning.reason
    else:
        assert "read 4.00x in the loop, but head to head" in tuning.reason and "timing noise" in tuning.reason
    assert "no candidate" not in tuning.reason


def test_a_default_the_loop_found_slower_than_fp32_stays_if_head_to_head_float_is_no_faster(tmp_path, monkeypatch):
    """The default at 0.97x of FP32 in the loop gives way to float only if float, timed alone
    against it, is at least as fast (no margin: float is also exact)."""
    from tests import models

    model = tmp_path / "residual.onnx"
    onnx.save(models.residual_block(), model)
    data = models.feeds(models.residual_block(), batches=4, batch=4)
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), np.full(n, 1.03), *(np.full(n, 1.2) for _ in range(sessions - 2))])
    for gain, float_kept in ((0.99, False), (1.0, True)):
        monkeypatch.setattr(_tuning, "_head_to_head", lambda first, second, samples, *handover, gain=gain: gain)
        result = lp.quantize(model, tmp_path / "t.onnx", data=data, tune="latency")
        assert (result.plan.layers() == []) == float_kept and result.tuning.head_to_head == gain


def test_measure_repeats_a_fast_model_within_a_round(clock):
    """A reference run of 1 ms, against ROUND_MS of 5: every session runs 5 times a round, and
    its time is the round's mean."""
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    sessions = [_Fixed(clock, 0.001, [ref]), _Fixed(clock, 0.0005, [ref])]
    times, _, _ = _tuning.measure(sessions, samples)
    reps, rounds = round(_tuning.ROUND_MS / 1.0), _tuning.DROP_AFTER + 1  # no candidate but the default, 2x FP32's speed
    assert sessions[1].calls == _tuning.WARMUP + rounds * reps
    assert sessions[0].calls == _tuning.WARMUP + 1 + rounds * reps  # one more, warm: it sets the repeats
    assert np.median(times[1]) == pytest.approx(0.5)


def test_the_searchs_integer_ops_choice_is_in_the_config_and_reproduces(tmp_path, monkeypatch):
    """A candidate with integer ops on, kept (the rule forced), is named by the config it returns:
    on a residual block, every layer and the Add between them on integers."""
    from tests import models

    model = tmp_path / "residual.onnx"
    onnx.save(models.residual_block(), model)
    data = models.feeds(models.residual_block(), batches=4, batch=4)
    monkeypatch.setattr(_tuning, "choose", lambda default, speedup, nmse, **kwargs: (0, "all"))
    out = tmp_path / "t.onnx"
    result = lp.quantize(model, out, data=data, tune="latency")
    config = result.plan.config
    assert (config.min_reduction, config.integer_ops) == (0, "all") and result.plan.integer_ops == ["add"]
    assert [(c.min_reduction, c.integer_ops, c.integer_op_nodes) for c in result.tuning.candidates] == [
        (0, "all", 1), (64, "target", 0), (256, "target", 0)]  # (64, all) has no Add between layers: the default's model
    assert len(result.plan.layers()) == 3 and result.tuning.samples == _tuning.SAMPLES
    again = tmp_path / "again.onnx"
    lp.quantize(model, again, data=data, config=config)
    assert again.read_bytes() == out.read_bytes()


def _force_times(monkeypatch, timings):
    """measure() with its timings forced, `timings(sessions, samples)` giving each session's;
    output errors measured for real on two samples, and the reference's outputs on every one."""
    real = _tuning.measure

    def forced(sessions, samples, **kwargs):
        _, nmse, _ = real(sessions, samples[:2])
        return timings(len(sessions), len(samples)), nmse, [sessions[0].run(None, feed) for feed in samples]

    monkeypatch.setattr(_tuning, "measure", forced)


def _residual_search(tmp_path, monkeypatch, every_layer_seconds: float, target: str = "cpu"):
    """The latency search on a residual block for `target`'s runtime, timings forced (FP32 1, the
    default and the others 0.5, every layer quantized `every_layer_seconds`), the calibration
    passes recorded."""
    if target == "openvino":
        pytest.importorskip("openvino")
    from lowprec_core import _api
    from tests import models

    from lowprec_core import _ops

    # The default quantizes the 8-channel first conv too, as the search's candidates assume:
    # these tests are of the search, not of that placement rule.
    monkeypatch.setitem(_ops.TARGETS, "cpu", _ops.TARGETS["cpu"].replace(requantize_min_channels=0))
    model = tmp_path / "residual.onnx"
    onnx.save(models.residual_block(), model)
    data = models.feeds(models.residual_block(), batches=4, batch=4)
    passes = []
    real_collect = _api.collect

    def recorded(prepared, feeds, requests, **kwargs):
        stats = real_collect(prepared, feeds, requests, **kwargs)
        passes.append((stats.samples, len(requests)))
        return stats

    monkeypatch.setattr(_api, "collect", recorded)
    # Sessions: FP32, the default, then every layer (with integer ops where the runtime has
    # them: candidates() order), then the rest.
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), np.full(n, 0.5), np.full(n, every_layer_seconds),
                                                   *(np.full(n, 0.5) for _ in range(sessions - 3))])
    result = lp.quantize(model, tmp_path / "t.onnx", data=data, config=lp.QuantConfig(target=target), tune="latency")
    every = next(c for c in result.tuning.candidates if c.min_reduction == 0)
    return model, data, result, every, passes


@pytest.mark.parametrize("target", ["cpu", "openvino"])
def test_a_candidate_the_calibration_lacks_is_timed_from_a_few_samples_and_never_calibrated_in_full_when_slower(tmp_path, monkeypatch, target):
    """The first pass covers the default's floor; every layer quantized needs more tensors,
    calibrated over PROVISIONAL_SAMPLES samples only, as it ran slower than the default."""
    _, _, result, every, passes = _residual_search(tmp_path, monkeypatch, every_layer_seconds=1.0, target=target)
    assert every.provisional_samples == _tuning.PROVISIONAL_SAMPLES and not every.chosen
    assert all(c.provisional_samples is None for c in result.tuning.candidates if c is not every)
    assert [samples for samples, _ in passes] == [16, _tuning.PROVISIONAL_SAMPLES]
    assert result.calibration_samples == 16 and (result.plan.config.min_reduction, result.plan.config.integer_ops) == (64, "target")


@pytest.mark.parametrize("target", ["cpu", "openvino"])
def test_a_provisional_candidate_fast_enough_to_be_kept_is_calibrated_in_full_and_its_error_measured_again(tmp_path, monkeypatch, target):
    """Twice as fast as the default: it is calibrated over every sample, in a pass over exactly
    its own tensors (as its config calibrates without a search: ORT computes the residual Add a
    hair differently when the probe also outputs the conv before it), and the output error it
    is judged by is that of the model built from them (here measured again independently, over
    the tuning samples: the first 10 calibration rows, batch 1)."""
    from lowprec_core._quantize.planner import statistic_requests

    model, data, result, every, passes = _residual_search(tmp_path, monkeypatch, every_layer_seconds=0.25, target=target)
    assert every.provisional_samples is None
    config = lp.QuantConfig(target=target, min_reduction=0, integer_ops=every.integer_ops)
    own = statistic_requests(prepare(onnx.load(model)), target, config=config)
    assert [samples for samples, _ in passes] == [16, _tuning.PROVISIONAL_SAMPLES, 16] and passes[2][1] == len(own) > passes[1][1]
    named = tmp_path / "named.onnx"
    lp.quantize(model, named, data=data, config=config)
    serving = config.runtime
    fp32, int8 = (_runtime.serving_session(str(p), runtime=serving, threads=1, precision="f32" if p == model else None) for p in (model, named))
    rows = [{k: v[i:i + 1] for k, v in feed.items()} for feed in data for i in range(4)][:_tuning.SAMPLES]
    assert every.nmse == pytest.approx(_tuning.output_error([fp32.run(None, row) for row in rows], int8, rows), rel=1e-4)
    if every.chosen:
        assert (tmp_path / "t.onnx").read_bytes() == named.read_bytes()


def test_where_nothing_quantized_beats_fp32_the_search_says_so_and_keeps_every_layer_float(demo, tmp_path, monkeypatch):
    """Timings forced: every quantized candidate twice as slow as FP32. The float candidate (in
    ORT, the FP32 reference itself, never timed twice) is kept; its config reproduces it."""
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), *(np.full(n, 2.0) for _ in range(sessions - 1))])
    out = tmp_path / "t.onnx"
    result = lp.quantize(demo["model"], out, data=demo["calib"], tune="latency")
    tuning, config = result.tuning, result.plan.config
    (chosen,) = [c for c in tuning.candidates if c.chosen]
    assert chosen.min_reduction is None and chosen.layers == 0 and (chosen.speedup, chosen.nmse) == (1.0, 0.0)
    assert "every layer float" in tuning.reason and "no layer pays off in integer here" in tuning.reason
    assert all(c.speedup == 0.5 for c in tuning.candidates if not c.chosen)
    assert result.plan.layers() == [] and set(config.ignore) == {"Conv", "Gemm"}  # the digit classifier's layer types
    assert not {n.op_type for n in onnx.load(out).graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    again = tmp_path / "again.onnx"
    lp.quantize(demo["model"], again, data=demo["calib"], config=config)
    assert again.read_bytes() == out.read_bytes()


def test_an_int8_default_measured_slower_than_fp32_gives_way_to_a_floor_that_leaves_every_layer_float(tmp_path, monkeypatch):
    """Timings forced on the residual block: the default (floor 64) at 0.97x of FP32, within
    the margin of it. Floor 256 quantizes no layer: in ORT (f32) it runs as the reference does
    and is not timed again. No INT8 placement beats FP32, so the float one is kept and the
    search says so."""
    from tests import models

    model = tmp_path / "residual.onnx"
    onnx.save(models.residual_block(), model)
    data = models.feeds(models.residual_block(), batches=4, batch=4)
    timed = []

    def forced(sessions, n):
        timed.append(sessions)
        return [np.full(n, 1.0), np.full(n, 1.03), *(np.full(n, 1.2) for _ in range(sessions - 2))]

    _force_times(monkeypatch, forced)  # FP32, the default (64), every layer with integer ops (0, all)
    result = lp.quantize(model, tmp_path / "t.onnx", data=data, tune="latency")
    (chosen,) = [c for c in result.tuning.candidates if c.chosen]
    assert (chosen.min_reduction, chosen.layers, chosen.speedup, chosen.nmse) == (256, 0, 1.0, 0.0) and timed == [3]
    assert result.plan.layers() == []
    assert "against the default's (min_reduction 64) 0.97x" in result.tuning.reason
    assert "no layer pays off in integer here" in result.tuning.reason and "every layer stays float" in result.tuning.reason


@pytest.mark.parametrize(("extra", "needle"), [
    (["--stats", "STATS"], "--tune latency measures the candidates on data: give --data (or --eval)"),
    (["--data", "CALIB", "--tune-threads", "0"], "tune_threads must be a positive thread count, not 0"),
    (["--data", "CALIB", "--tune-batch", "0"], "tune_batch must be a positive batch size, not 0"),
])
def test_bad_tuning_requests_are_exit_2_before_any_work(demo, tmp_path, capsys, extra, needle):
    stats = tmp_path / "stats"
    lp.calibrate(demo["model"], demo["calib"], stats)
    names = {"STATS": str(stats), "CALIB": str(demo["calib"]), "EVAL": str(demo["eval"]), "LABELS": str(demo["labels"])}
    out = tmp_path / "x.onnx"
    args = ["quantize", str(demo["model"]), "--out", str(out), "--tune", "latency", *[names.get(a, a) for a in extra]]
    assert main(args) == 2
    assert needle in capsys.readouterr().err and not out.exists()


def _fastest_last(monkeypatch):
    """Timings forced: the default at 1.0x of FP32, the other candidates at 2x, the last timed at
    4x; output errors measured for real on two samples."""
    calls = []

    def timings(sessions, n):
        calls.append(sessions)
        return [np.full(n, 1.0), np.full(n, 1.0), *(np.full(n, 0.5) for _ in range(sessions - 3)), np.full(n, 0.25)]

    _force_times(monkeypatch, timings)
    return calls


def _budget(**drops):
    return lp.AccuracyBudget(metrics=tuple(lp.MetricBudget(metric=m, max_drop=d) for m, d in drops.items()), min_speedup=0)


def test_with_a_budget_the_fastest_placement_within_it_is_kept_and_scored_once(demo, tmp_path, monkeypatch):
    """The latency search with the accuracy-aware search: the forced-fastest candidate meets a
    loose budget, so it is kept; the search over float layers starts from it, and the model the
    latency search judged is not scored a second time."""
    from lowprec_core import _validate

    _fastest_last(monkeypatch)
    passes = []
    real_pass = _validate.Evaluator._pass
    monkeypatch.setattr(_validate.Evaluator, "_pass", lambda self, sess: passes.append(sess) or real_pass(self, sess))
    out = tmp_path / "t.onnx"
    result = lp.quantize(demo["model"], out, data=demo["calib"], eval_data=demo["eval"], labels=demo["labels"],
                         accuracy=_budget(top1=0.05), tune="latency", work_dir=tmp_path / "work")
    tuning, search, config = result.tuning, result.accuracy, result.plan.config
    (chosen,) = [c for c in tuning.candidates if c.chosen]
    judged = [c for c in tuning.candidates if c.within_budget is not None]
    assert judged == [chosen] and chosen.within_budget and chosen.speedup == 4.0
    assert (config.min_reduction, config.integer_ops) == (chosen.min_reduction, chosen.integer_ops) != (64, "target")
    assert "within the accuracy budget" not in tuning.reason and "1 faster candidate(s) scored" in tuning.reason
    assert search.met and search.float_layers == {} and len(passes) == 1  # one pass: the reference and the candidate
    assert len(result.plan.layers()) == chosen.layers
    again = tmp_path / "again.onnx"
    lp.quantize(demo["model"], again, data=demo["calib"], config=config)
    assert again.read_bytes() == out.read_bytes()


def test_a_budget_the_fast_candidates_miss_leaves_the_search_over_float_layers_to_meet_it(demo, tmp_path, monkeypatch):
    """A budget no quantized candidate meets (the logits' MSE within 0.0005 of FP32's): each
    clearly faster candidate is judged and misses, the default stays, and layers go back to float
    from there until the budget holds."""
    _fastest_last(monkeypatch)
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], eval_data=demo["eval"], labels=demo["labels"],
                         accuracy=_budget(mse=0.0005), tune="latency")
    tuning, search, config = result.tuning, result.accuracy, result.plan.config
    (chosen,) = [c for c in tuning.candidates if c.chosen]
    assert (chosen.min_reduction, chosen.integer_ops, chosen.within_budget) == (64, "target", None)
    judged = [c for c in tuning.candidates if c.within_budget is not None]
    assert judged and not any(c.within_budget for c in judged) and all(c.speedup > chosen.speedup for c in judged)
    assert search.met and search.float_layers and set(search.float_layers) <= set(config.ignore)
    assert (config.min_reduction, config.integer_ops) == (64, "target")


def test_a_resumed_tuned_search_reads_the_latency_search_from_its_work_dir(demo, tmp_path, monkeypatch):
    calls = _fastest_last(monkeypatch)
    args = ["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--eval", str(demo["eval"]), "--labels", str(demo["labels"]),
            "--metric", "top1=0.05", "--min-speedup", "0", "--tune", "latency", "--work-dir", str(tmp_path / "work")]
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    assert main([*args, "--out", str(first), "--report", str(tmp_path / "first.json")]) == 0 and len(calls) == 1
    assert main([*args, "--out", str(second), "--report", str(tmp_path / "second.json")]) == 0 and len(calls) == 1  # not re-timed
    assert second.read_bytes() == first.read_bytes()
    reports = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("first", "second")]
    assert reports[0]["tuning"] == reports[1]["tuning"]
    # A work dir is one run's: the same budget without the search is another run.
    assert main(args[:-4] + ["--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "x.onnx")]) == 2


def test_a_candidate_dropped_from_the_timing_loop_is_never_kept(demo, tmp_path, monkeypatch):
    """Its median over the rounds it ran is reported, but it lost to the default in those rounds:
    a faster-looking figure over fewer rounds must not replace the default."""
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), np.full(n, 0.5), *(np.full(_tuning.DROP_AFTER, 0.25) for _ in range(sessions - 2))])
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], tune="latency")
    (chosen,) = [c for c in result.tuning.candidates if c.chosen]
    dropped = [c for c in result.tuning.candidates if c.rounds == _tuning.DROP_AFTER]
    assert dropped and all(c.speedup == 4.0 for c in dropped)
    assert (chosen.min_reduction, chosen.integer_ops, chosen.speedup) == (64, "target", 2.0)


def _residual(tmp_path):
    """The residual block quantized by default (conv0 and conv1; conv0's Relu folded into its
    output quantizer), with its prepared float model."""
    from lowprec_core._model_io import prepare
    from lowprec_core._ops import TARGETS
    from tests import models

    model = models.residual_block(width=32)
    onnx.save(model, tmp_path / "m.onnx")
    result = lp.quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", data=models.feeds(model, batches=2, batch=2))
    assert result.plan.nodes == ["conv0", "conv1"]
    return prepare(model, TARGETS["cpu"].runtime), onnx.load(tmp_path / "q.onnx"), result.plan.nodes


def test_layer_costs_pair_each_runtime_node_with_its_float_counterpart(tmp_path):
    """ONNX Runtime's names: a conv fused with its Relu named after the Relu's output, QLinearConv
    named after the conv, quantizers by their own names. Each INT8 node's time minus its float
    counterpart's goes to the layers it belongs to: a quantizer to the layers reading it (else to
    the layer whose output it quantizes); nodes in both profiles belong to no layer."""
    prepared, int8, layers = _residual(tmp_path)
    T = _runtime.NodeTime
    common = [T("add", 2.0), T("conv2", 8.0), T("gate", 1.0)]
    float_profile = [T("r_nchwc", 10.0), T("conv1", 20.0), *common]
    int8_profile = [T("x_QuantizeLinear", 3.0), T("conv0_token_5", 4.0), T("r_QuantizeLinear", 2.0), T("conv1_token_6", 25.0),
                    T("a_DequantizeLinear/duplicated", 1.0), *common]
    assert _tuning.layer_costs(prepared, int8, layers, float_profile, int8_profile) == {"conv0": 3.0 + 4.0 - 10.0, "conv1": 2.0 + 5.0 + 1.0}
    # A float layer no INT8 node pairs with is credited to it.
    assert _tuning.layer_costs(prepared, int8, layers, float_profile, int8_profile[:1] + int8_profile[2:])["conv0"] == 3.0 - 10.0


def test_layer_costs_read_openvinos_fused_names(tmp_path):
    """OpenVINO lists the model's nodes each of its nodes runs: a quantizer fused into the Add
    before it costs what the fused node takes over the float Add, charged to the layer reading it."""
    prepared, int8, layers = _residual(tmp_path)
    T = _runtime.NodeTime
    float_profile = [T("Conv_1", 10.0, ("conv0", "relu0")), T("Conv_2", 20.0, ("conv1",)), T("Add_3", 5.0, ("add",))]
    int8_profile = [T("Conv_1", 6.0, ("conv0",)), T("Conv_2", 12.0, ("conv1",)), T("Add_3", 9.0, ("add", "r_DequantizeLinear"))]
    assert _tuning.layer_costs(prepared, int8, layers, float_profile, int8_profile) == {"conv0": -4.0, "conv1": -8.0 + 4.0}


@pytest.mark.parametrize("serving", ["onnxruntime", "openvino"])
def test_profiles_of_a_real_runtime_cost_every_layer_and_leave_no_file(demo, tmp_path, monkeypatch, serving):
    from lowprec_core._model_io import prepare
    from lowprec_core._ops import TARGETS

    monkeypatch.chdir(tmp_path)
    config = lp.QuantConfig(target="openvino" if serving == "openvino" else "cpu")
    result = lp.quantize(demo["model"], tmp_path / "q.onnx", data=demo["calib"], config=config)
    prepared = prepare(onnx.load(demo["model"]), TARGETS[config.target].runtime)
    int8 = onnx.load(tmp_path / "q.onnx")
    sample = {"image": np.load(demo["calib"])["image"][:1]}
    profiles = [_runtime.profile(m.SerializeToString(), sample, runtime=serving, threads=1, runs=2) for m in (prepared, int8)]
    assert all(p and all(item.micros >= 0 for item in p) for p in profiles)
    costs = _tuning.layer_costs(prepared, int8, result.plan.nodes, *profiles)
    assert set(costs) == set(result.plan.nodes) and any(costs.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def test_the_default_less_the_layers_its_profile_finds_slower_is_a_candidate_that_reproduces(demo, tmp_path, monkeypatch):
    """Costs forced: the profile finds the first layer slower in integer. The default less that
    layer is built and timed; kept (the rule forced), its config names the layer and rebuilds it."""
    monkeypatch.setattr(_tuning, "PROFILE_GAIN", 0.0)
    # Every session runs every round, alike: timed for real, the candidate (as fast as the default)
    # was dropped for running behind it by the margin in over half of the rounds, when it was.
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), *(np.full(n, 0.5) for _ in range(sessions - 1))])
    monkeypatch.setattr(_runtime, "float_precision", lambda serving: "bf16")  # as OpenVINO on a bf16 CPU
    monkeypatch.setattr(_tuning, "layer_costs", lambda prepared, int8, layers, *profiles: {n: 1.0 if i == 0 else -1.0 for i, n in enumerate(layers)})
    monkeypatch.setattr(_tuning, "choose", lambda default, speedup, nmse, **kwargs: next(k for k in speedup if len(k) > 2))
    out = tmp_path / "t.onnx"
    result = lp.quantize(demo["model"], out, data=demo["calib"], tune="latency")
    tuning, config = result.tuning, result.plan.config
    (chosen,) = [c for c in tuning.candidates if c.chosen]
    first = list(tuning.layer_costs)[0]
    assert chosen.float_layers == [first] and (chosen.min_reduction, chosen.integer_ops) == (64, "target")
    assert tuning.layer_costs[first] == 1.0 and first in config.ignore and first not in result.plan.layers()
    assert "1 layer(s) the profile found slower in integer left float" in tuning.reason
    again = tmp_path / "again.onnx"
    lp.quantize(demo["model"], again, data=demo["calib"], config=config)
    assert again.read_bytes() == out.read_bytes()


def test_where_openvino_runs_float_in_bf16_the_default_is_also_timed_with_f32_float_layers(demo, tmp_path, monkeypatch, capsys):
    """OpenVINO on a bf16 CPU runs an INT8 model's float layers in bf16 (Magika on Zen 4:
    agreement 0.919; with them at f32, 0.980 and faster at batch 1). The search times the
    default placement so too; kept (timings forced: it runs fastest), the choice is in the
    config, stamped into the model, honoured by lowprec's OpenVINO sessions and named to the user."""
    pytest.importorskip("openvino")
    monkeypatch.setattr(_tuning.runtime, "float_precision", lambda serving: "bf16")  # as on such a CPU
    monkeypatch.setattr(_tuning, "QUALITY_SLACK", 10.0)  # the digit CNN's errors are all tiny: the rules
    monkeypatch.setattr(_tuning, "F32_ERROR_SHARE", 10.0)  # are tested on their own
    # Sessions: FP32, the default, the other floors, the default at f32, every layer float.
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), *(np.full(n, 0.5) for _ in range(sessions - 3)),
                                                   np.full(n, 0.25), np.full(n, 2.0)])
    out = tmp_path / "t.onnx"
    code = main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out), "--runtime", "openvino",
                 "--target", "openvino", "--tune", "latency", "--report", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    (chosen,) = [c for c in report["tuning"]["candidates"] if c["chosen"]]
    assert chosen["float_precision"] == "f32" and chosen["min_reduction"] == 64 and chosen["speedup"] == 4.0
    assert "min_reduction 64, float layers at f32" in report["tuning"]["reason"]
    assert "INFERENCE_PRECISION_HINT=f32" in capsys.readouterr().out
    from lowprec_core import _lineage

    config = lp.QuantConfig(**_lineage.read(onnx.load(out))[1])
    assert config.float_precision == "f32"
    assert _runtime.serving_session(str(out), runtime="openvino").precision == "f32"
    again = tmp_path / "again.onnx"
    lp.quantize(demo["model"], again, data=demo["calib"], config=config)
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("large_batch_gain", [1.8, 0.8])
def test_f32_float_layers_faster_at_batch_1_are_kept_only_if_no_slower_at_a_large_batch(demo, tmp_path, monkeypatch, large_batch_gain):
    """Timings forced: the default at f32 runs fastest at batch 1, its error not cut. It is then
    timed against the default on the tuning samples as one batch (forced too): kept where it is
    no slower there (the U-Net `columns` on Zen 4), dropped where it is (PP-OCR cls)."""
    pytest.importorskip("openvino")
    monkeypatch.setattr(_tuning.runtime, "float_precision", lambda serving: "bf16")  # as on such a CPU
    monkeypatch.setattr(_tuning, "QUALITY_SLACK", 10.0)  # the digit CNN's errors are all tiny
    monkeypatch.setattr(_tuning, "F32_ERROR_SHARE", 0.0)  # not kept for its error
    _force_times(monkeypatch, lambda sessions, n: [np.full(n, 1.0), *(np.full(n, 0.5) for _ in range(sessions - 3)),
                                                   np.full(n, 0.25), np.full(n, 2.0)])
    batches = []
    monkeypatch.setattr(_tuning, "_batch_gain", lambda first, second, large, *handover: batches.append(large) or large_batch_gain)
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], config=lp.QuantConfig(target="openvino"),
                         tune="latency")
    (chosen,) = [c for c in result.tuning.candidates if c.chosen]
    assert len(batches) == 1 and next(iter(batches[0].values())).shape[0] == _tuning.SAMPLES
    kept = large_batch_gain >= 1 / _tuning.SPEED_MARGIN
    assert (chosen.float_precision == "f32") == kept and result.plan.config.float_precision == ("f32" if kept else "default")
    assert ("1.80x the default's speed on the 10 tuning samples as one batch" in result.tuning.reason) == kept


def test_a_candidate_key_carries_its_float_precision_into_the_config():
    config = lp.QuantConfig(target="openvino")
    key = (64, "target", (), "f32")
    assert _tuning._config_of(config, key, onnx.ModelProto()).float_precision == "f32"
    assert _tuning._config_of(config, (64, "target"), onnx.ModelProto()).float_precision == "default"
    assert _tuning._describe(key) == "min_reduction 64, float layers at f32"


def test_f32_float_layers_are_kept_where_they_cut_the_error_or_run_faster_at_both_batch_sizes():
    """Magika in OpenVINO on Zen 4 (before its LayerNorm was centred): f32 float layers cut the
    output error 70-fold and ran faster. PP-OCR cls: 0.7x the error, faster at batch 1 but not
    at batch 32. The U-Net `columns`: f32 faster at both. Kept, f32 is what a faster candidate
    must then keep within."""
    default, f32, other = (64, "target"), (64, "target", (), "f32"), (256, "target")
    magika = {default: 2.37, f32: 2.52, other: 2.0}
    assert _tuning._precision_base(default, magika, {default: 0.036, f32: 0.0005, other: 0.03}) == (f32, None) and f32 in magika
    within_noise = {default: 2.37, f32: 2.30}
    assert _tuning._precision_base(default, within_noise, {default: 0.036, f32: 0.0005}) == (f32, None)
    cls_errors = {default: 1.4e-5, f32: 1.0e-5, other: 2.8e-6}
    cls = {default: 1.09, f32: 1.33, other: 1.26}
    assert _tuning._precision_base(default, cls, cls_errors) == (default, None) and f32 not in cls  # no large batch measured
    cls = {default: 1.09, f32: 1.33, other: 1.26}
    asked = []
    assert _tuning._precision_base(default, cls, cls_errors, lambda key: asked.append(key) or 1.10 / 1.40) == (default, None)
    assert asked == [f32] and f32 not in cls
    columns = {default: 0.88, f32: 1.07}
    assert _tuning._precision_base(default, columns, {default: 1e-3, f32: 1.1e-3}, lambda key: 1.8) == (f32, 1.8)
    noise = {default: 0.88, f32: 1.07}  # its float layers are f32, not bf16: an error 1.4x the default's is noise
    assert _tuning._precision_base(default, noise, {default: 3.2e-7, f32: 4.4e-7}, lambda key: 1.8) == (f32, 1.8)
    slower = {default: 2.37, f32: 2.0}
    assert _tuning._precision_base(default, slower, {default: 0.036, f32: 0.0005}, lambda key: 1.8) == (default, None) and f32 not in slower
    assert _tuning._precision_base(default, {default: 1.0}, {default: 0.1}) == (default, None)
    # From the f32 base, a faster candidate must keep within f32's error, not the default's.
    nmse = {default: 0.036, f32: 0.0005, other: 0.03}
    assert _tuning.choose(f32, {default: 2.37, f32: 2.52, other: 3.0}, nmse) == f32


def test_the_large_batch_is_the_tuning_samples_stacked_where_they_stack():
    """Samples of one shape stack along the batch axis; samples that differ elsewhere (variable
    length), or a model that fixes its batch, give no large batch (the f32 speed rule then keeps
    the default)."""
    from tests import models

    model = models.tanh_gelu_mlp()
    rows = [{"x": np.full((1, 6, 16), i, np.float32)} for i in range(3)]
    stacked = _tuning._large_batch(model, rows)
    assert stacked["x"].shape == (3, 6, 16) and list(stacked["x"][:, 0, 0]) == [0, 1, 2]
    assert _tuning._large_batch(model, [*rows, {"x": np.zeros((1, 7, 16), np.float32)}]) is None
    assert _tuning._large_batch(model, rows[:1]) is None
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # the batch fixed at 1
    assert _tuning._large_batch(model, rows) is None


@pytest.mark.parametrize("serving", ["onnxruntime", "openvino"])
def test_candidates_past_the_time_bound_go_untried_and_the_report_names_them(demo, tmp_path, monkeypatch, serving):
    """A bound no build fits in: the first wave still runs (the default; where OpenVINO runs float
    in bf16, the default with f32 float layers and every layer float too), every other candidate
    goes untried, is named in the report and never built."""
    if serving == "openvino":
        pytest.importorskip("openvino")
        monkeypatch.setattr(_tuning.runtime, "float_precision", lambda serving: "bf16")  # as on such a CPU
    monkeypatch.setattr(_tuning, "SETUP_FLOOR", 0.0)
    monkeypatch.setattr(_tuning, "SEARCH_SHARE", 1e-9)
    built = []
    real_build = _tuning._build
    monkeypatch.setattr(_tuning, "_build", lambda quantizer, config, replay: built.append(config) or real_build(quantizer, config, replay))
    config = lp.QuantConfig(target="openvino" if serving == "openvino" else "cpu")
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], config=config, tune="latency")
    tuning = result.tuning
    rest = _tuning.candidates(config)[1:]
    assert tuning.untried == [_tuning._describe(key) for key in rest]
    assert f"{len(rest)} more candidate(s) left untried" in tuning.reason
    timed = {(c.min_reduction, c.integer_ops, c.float_precision) for c in tuning.candidates}
    first = {(64, "target", "default"), (None, "target", "default")} | ({(64, "target", "f32")} if serving == "openvino" else set())
    assert timed == first
    assert not any((c.min_reduction, c.integer_ops) in rest for c in built)


def test_the_search_times_requests_of_the_batch_the_model_is_served_at(demo, tmp_path, monkeypatch, capsys):
    """--tune-batch 4: every session of the loop runs requests of 4 samples, and the report and
    its reason say so."""
    real, shapes = _tuning.measure, []

    def recorded(sessions, samples, **kwargs):
        shapes.extend(next(iter(feed.values())).shape[0] for feed in samples)
        return real(sessions, samples, **kwargs)

    monkeypatch.setattr(_tuning, "measure", recorded)
    out, report = tmp_path / "t.onnx", tmp_path / "q.json"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out), "--tune", "latency",
                 "--tune-batch", "4", "--report", str(report)]) == 0
    assert shapes == [4] * _tuning.SAMPLES
    tuning = json.loads(report.read_text())["tuning"]
    assert tuning["batch"] == 4 and "x of FP32 at batch 4" in tuning["reason"]
    assert "latency search (onnxruntime, 1 thread(s), batch 4" in capsys.readouterr().out


def test_tuning_batches_take_the_datas_samples_in_turn_where_it_holds_too_few(tmp_path):
    """Six samples, batches of 4: the first request holds samples 0-3, the second 4, 5, 0, 1."""
    from lowprec_core import _api
    from tests import models

    model = models.conv_relu_conv()
    rows = np.stack([np.full(models.feeds(model, batches=1, batch=1)[0]["x"].shape[1:], i, np.float32) for i in range(6)])
    samples = _api._tuning_samples(prepare(model), [{"x": rows}], str(tmp_path), 4)
    assert len(samples) == _tuning.SAMPLES and all(s["x"].shape[0] == 4 for s in samples)
    assert [s["x"][:, 0, 0, 0].tolist() for s in samples[:2]] == [[0, 1, 2, 3], [4, 5, 0, 1]]


def _variable_length():
    from tests import models

    model = models.matmul_add_3d()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "T"
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "T"
    rng = np.random.default_rng(0)
    return model, [{"x": rng.normal(size=(1, t, 16)).astype(np.float32)} for t in (6, 7, 6, 8)]


@pytest.mark.parametrize(("case", "batch", "error", "needle"), [
    ("fixed", 4, lp.ConfigError, "tune_batch 4: the model fixes its batch at 1 (input 'x' is [1, 16, 4, 4])"),
    ("short", 8, lp.DataError, "tune_batch 8: the data holds 6 sample(s), fewer than one batch"),
    ("variable", 2, lp.DataError, "tune_batch 2: the data's samples differ in size beyond the batch axis"),
])
def test_a_tuning_batch_the_model_or_data_cannot_give_is_a_clear_error(tmp_path, case, batch, error, needle):
    from lowprec_core import _api
    from tests import models

    if case == "fixed":
        model = models.pooled_linear_head(batch=1)
        data = [{"x": np.zeros((1, 16, 4, 4), np.float32)}] * 12
    elif case == "short":
        model = models.conv_relu_conv()
        data = models.feeds(model, batches=3, batch=2)
    else:
        model, data = _variable_length()
    with pytest.raises(error, match=re.escape(needle)):
        _api._tuning_samples(prepare(model), data, str(tmp_path), batch)


def test_a_work_dir_keeps_the_latency_searchs_choice_for_its_batch_alone(tmp_path):
    """A resumed run reads the search's saved choice: one asked to time another batch is another run."""
    from lowprec_core import _workdir

    budget = lp.AccuracyBudget(metrics=(lp.MetricBudget(metric="agreement", max_drop=0.01),))
    args = (tmp_path / "work", "0" * 64, lp.QuantConfig(), budget, None, None)
    _workdir.claim(*args, tune="latency", tune_batch=4)
    _workdir.claim(*args, tune="latency", tune_batch=4)  # the same run, resumed
    with pytest.raises(lp.ConfigError, match=r"belongs to another run \(different tune_batch\)"):
        _workdir.claim(*args, tune="latency", tune_batch=1)
