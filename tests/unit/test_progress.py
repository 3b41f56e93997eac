"""Progress records: a redrawn bar on a terminal, plain lines in a pipeline log."""

from __future__ import annotations

import io
import logging

from lowprec_core import _progress as progress
from lowprec_core._cli import ProgressDisplay


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _capture(stream) -> logging.Logger:
    logger = progress.LOGGER
    logger.handlers[:] = [ProgressDisplay(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_a_terminal_gets_one_redrawn_line_and_each_search_iteration():
    screen = Terminal()
    _capture(screen)
    for done in range(1, 5):
        progress.report("calibration", done, 4)
    progress.report("accuracy-aware iteration", 1, detail="revert conv1; 1 float")
    text = screen.getvalue()
    assert text.count("\r\x1b[K") == 4 and "calibration [####################] 4/4" in text
    assert text.endswith("\naccuracy-aware iteration 1: revert conv1; 1 float\n")


def test_a_log_gets_plain_lines_every_tenth_batch_and_the_final_count():
    log = io.StringIO()
    _capture(log)
    for done in range(1, 26):
        progress.report("calibration", done, detail=f"{done * 16} samples")
    progress.report("calibration", 25, 25, detail="400 samples")
    assert log.getvalue().splitlines() == ["calibration 10: 160 samples", "calibration 20: 320 samples", "calibration 25/25: 400 samples"]


def test_calibration_logs_how_many_samples_it_read():
    """A log showed the last tenth batch (160 of 300 samples read) as if it were the count."""
    from lowprec_core._calibration.collect import collect
    from lowprec_core._quantize.planner import statistic_requests
    from tests import models

    log = io.StringIO()
    _capture(log)
    model = models.mlp()
    collect(model, models.feeds(model, batches=23, batch=3), statistic_requests(model), model_sha256="t")
    assert log.getvalue().splitlines()[-1] == "calibration 23/23: 69 samples"
