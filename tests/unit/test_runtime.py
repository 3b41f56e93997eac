"""runtime.session: the options lowprec's own loops run ONNX Runtime with."""

from __future__ import annotations

import pytest

from lowprec_core import _runtime as runtime
from tests.models import conv_relu_conv

SPINNING = "session.intra_op.allow_spinning"


def test_library_sessions_do_not_spin_and_benchmark_sessions_keep_ort_default():
    model = conv_relu_conv()
    working = runtime.session(model).get_session_options()
    assert working.get_session_config_entry(SPINNING) == "0"
    timed = runtime.session(model, spinning=True).get_session_options()
    with pytest.raises(Exception, match=SPINNING):  # unset: ORT's own default (spinning) applies
        timed.get_session_config_entry(SPINNING)
