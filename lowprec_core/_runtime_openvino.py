"""The only importer of openvino: an ONNX model compiled by OpenVINO's CPU plugin, behind the
few session calls lowprec's loops make of ONNX Runtime's (get_inputs, get_outputs, run).

OpenVINO picks its own inference precision: bf16 on CPUs with native bf16 (AMX, AVX512_BF16),
f32 elsewhere. `precision="f32"` asks for f32, the reference an FP32 model is measured against;
None keeps the plugin's default, what a user who serves the FP32 model in OpenVINO gets, unless
the model is an INT8 model lowprec quantized for f32 float layers (QuantConfig.float_precision).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import openvino as ov

from ._errors import ModelError, one_line
from ._graph import input_sizes, shown_sizes
from ._struct import Struct

_CORE: ov.Core | None = None


def _core() -> ov.Core:
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def default_precision() -> str:
    """The precision the CPU plugin runs float layers at unless told: "bf16" or "f32"."""
    hint = _core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return hint.to_string() if hasattr(hint, "to_string") else str(hint)


# Where OpenVINO's ONNX frontend puts a model's metadata_props, and the one lowprec stamps its
# config under (lineage.stamp).
_STAMPED_CONFIG = ["framework", "lowprec.config"]


def stamped_precision(model: ov.Model) -> str | None:
    """The float precision an INT8 model was quantized to be served at (QuantConfig.float_precision,
    in the config lowprec stamped into it): "f32", or None for the plugin's default."""
    if not model.has_rt_info(_STAMPED_CONFIG):
        return None
    try:
        config = json.loads(model.get_rt_info(_STAMPED_CONFIG).astype(str))
    except ValueError:
        return None
    precision = config.get("float_precision", "default") if isinstance(config, dict) else "default"
    return None if precision == "default" else str(precision)


class _Value(Struct):
    name: str


# OpenVINO's ONNX frontend names each node it could not convert, by its first output, with the
# reason on the last line of that node's entry.
_FAILED_NODE = re.compile(r"<Node\((?P<op>[^)]*)\): (?P<output>[^>]*)>'(?P<log>.*?)(?=\n-- |\nSummary:|\Z)", re.S)


def conversion_failure(err: BaseException) -> str:
    """What OpenVINO could not do with a model: each unconverted node (op type, its output) and
    why, or the error's first line where it names none."""
    text = str(err)
    nodes = [f"{m['op']} node writing {m['output']!r}: {m['log'].strip().splitlines()[-1].strip()}"
             for m in _FAILED_NODE.finditer(text)]
    return "; ".join(nodes) if nodes else one_line(err, 400)


def _read(model: onnx.ModelProto | bytes | str, tmp: str) -> ov.Model:
    path = model
    if not isinstance(model, str):  # OpenVINO's ONNX frontend reads files
        path = str(Path(tmp) / "model.onnx")
        Path(path).write_bytes(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model)
    return _core().read_model(path)


def check_model(model: onnx.ModelProto | bytes | str) -> None:
    """Raise ModelError naming the nodes OpenVINO's ONNX frontend cannot convert (it reads the
    model without compiling it: tens of milliseconds)."""
    try:
        with tempfile.TemporaryDirectory(prefix="lowprec-ov-") as tmp:
            _read(model, tmp)
    except Exception as err:  # OpenVINO raises RuntimeError with the nodes it could not convert
        raise ModelError(f"OpenVINO cannot read the model: {conversion_failure(err)}{_free_sizes_hint(model)}") from None


def _free_sizes_hint(model: onnx.ModelProto | bytes | str) -> str:
    """Where the model's inputs leave sizes free beyond a batch: which, and that fixing them may
    help (a size that decides a shape-dependent If leaves its output's rank unknown to OpenVINO)."""
    if not isinstance(model, onnx.ModelProto):
        return ""
    shapes = input_sizes(model.graph)
    if not any(isinstance(size, str) for dims in shapes.values() for size in dims[1:]):
        return ""
    listed = ", ".join(f"{name} {shown_sizes(dims)}" for name, dims in shapes.items())
    return (f". The model's inputs leave sizes free ({listed}): fixing those it is served at "
            "(--input-shape NAME=SIZES, QuantConfig.input_shapes) may let OpenVINO read it")


class OpenVINOSession:
    """`profiling`: compiled with the plugin's per-node counters on, for node_times (they cost
    nothing measurable: 0.99-1.03x of the plain compile's run on PP-OCR cls, digits, det and
    Magika at f32 and bf16, 2-core Zen 4, interleaved)."""

    def __init__(self, model: onnx.ModelProto | bytes | str, *, threads: int | None = None, precision: str | None = None,
                 profiling: bool = False) -> None:
        config: dict[str, object] = {"PERF_COUNT": True} if profiling else {}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            with tempfile.TemporaryDirectory(prefix="lowprec-ov-") as tmp:
                read = _read(model, tmp)
                precision = precision or stamped_precision(read)
                if precision is not None:
                    config["INFERENCE_PRECISION_HINT"] = precision
                compiled = _core().compile_model(read, "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError with the node it could not convert
            raise ModelError(f"OpenVINO cannot compile the model: {conversion_failure(err)}") from None
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # "f32", "bf16", "f16"
        self._inputs = [_Value(port.get_any_name()) for port in compiled.inputs]
        self._outputs = [_Value(port.get_any_name()) for port in compiled.outputs]
        self._compiled = compiled
        self._request = compiled.create_infer_request()

    def get_inputs(self) -> list[_Value]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Value]:
        return list(self._outputs)

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        wanted = {value.name for value in self._inputs}
        results = self._request.infer({name: value for name, value in feed.items() if name in wanted}, share_inputs=False)
        by_name = {port.get_any_name(): np.array(value, copy=True) for port, value in results.items()}
        return [by_name[name] for name in (names or [value.name for value in self._outputs])]


    def node_times(self, feed: dict[str, np.ndarray], runs: int) -> list[tuple[str, float, tuple[str, ...]]]:
        """Per executed node of the compiled model: its name, mean microseconds over `runs` runs
        after one untimed run, and the model's nodes it fused (the plugin's originalLayersNames).
        The session must have been compiled with `profiling`."""
        request = self._request
        wanted = {value.name for value in self._inputs}
        inputs = {name: value for name, value in feed.items() if name in wanted}
        request.infer(inputs)
        total: dict[str, float] = {}
        for _ in range(runs):
            request.infer(inputs)
            for info in request.profiling_info:
                if info.status == ov.ProfilingInfo.Status.EXECUTED:
                    total[info.node_name] = total.get(info.node_name, 0.0) + info.real_time.total_seconds() * 1e6
        fused = {}
        for op in self._compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
            fused[op.get_friendly_name()] = tuple(n for n in names.split(",") if n)
        return [(name, micros / runs, fused.get(name, ())) for name, micros in total.items()]


def version() -> str:
    return ov.__version__
