"""runtime.session: the options lowprec's own loops run ONNX Runtime with."""

from __future__ import annotations

import pytest

from lowprec_core import runtime
from tests.models import conv_relu_conv

SPINNING = "session.intra_op.allow_spinning"


def test_library_sessions_do_not_spin_and_benchmark_sessions_keep_ort_default():
    model = conv_relu_conv()
    working = runtime.session(model).get_session_options()
    assert working.get_session_config_entry(SPINNING) == "0"
    timed = runtime.session(model, spinning=True).get_session_options()
    with pytest.raises(Exception, match=SPINNING):  # unset: ORT's own default (spinning) applies
        timed.get_session_config_entry(SPINNING)


def test_warm_up_builds_a_session_ort_accepts_and_starts_one_thread_per_process(monkeypatch):
    import numpy as np

    # The warm-up swallows its own failure, so a model ORT rejected would warm nothing up.
    sess = runtime.session(runtime._tiny_model(), threads=1, optimization="disabled")
    assert sess.run(None, {"x": np.ones(1, np.float32)})[0].tolist() == [1.0]

    started = []

    class Recorder:
        def __init__(self, *, target, name, daemon):
            started.append((name, daemon))

        def start(self):
            pass

    monkeypatch.setattr(runtime, "_warm", runtime.threading.Event())
    monkeypatch.setattr(runtime.threading, "Thread", Recorder)
    runtime.warm_up()
    runtime.warm_up()
    assert started == [("lowprec-ort-warm-up", False)]  # joined at exit: see warm_up
