"""Compile and run pipelines: YAML for a cluster, kfp's local SubprocessRunner for one machine."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from kfp import compiler, local

from lowprec_core.errors import PipelineError

from .ptq import ptq

log = logging.getLogger(__name__)

PIPELINES = {"ptq": ptq}


def compile_pipeline(out: str | os.PathLike[str], name: str = "ptq") -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PIPELINES[name], str(out))
    return out


def run_local(*, pipeline_root: str | os.PathLike[str] | None = None, **arguments) -> None:
    """Run `ptq` end to end in subprocesses of this Python; raises if any task fails."""
    with tempfile.TemporaryDirectory(prefix="lowprec-kfp-") as tmp:
        root = str(pipeline_root or tmp)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True)
        try:
            ptq(**arguments)
        except RuntimeError as err:  # kfp's local runner reports a failed task this way
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(err).strip().splitlines()[0])
            raise PipelineError(f"pipeline 'ptq' failed: {message}") from None
