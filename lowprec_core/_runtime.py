"""The only importer of onnxruntime: building sessions with explicit threads and providers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from ._config import RUNTIMES
from ._errors import ConfigError, ModelError
from ._float16 import computes_in_float16
from ._graph import all_nodes
from ._struct import Struct

log = logging.getLogger(__name__)

PROVIDERS = ["CPUExecutionProvider"]
PROTOBUF_LIMIT = 2**31 - 1  # one serialized ModelProto; larger models need external data
OPTIMIZATION = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(
    model: onnx.ModelProto | bytes | str,
    *,
    threads: int | None = None,
    optimization: str = "all",
    optimized_model_path: str | None = None,
    spinning: bool = False,
    profile_prefix: str | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on the CPU provider; failures become ModelError.

    `spinning`: whether ORT's intra-op workers busy-wait for the next parallel section (its
    default). lowprec's own loops do numpy work between runs, and a spinning worker takes the
    core that work needs (an SMT sibling, a pod's CPU quota). Benchmarks time what deployments
    run, ORT's default, and ask for it."""
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION[optimization]
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path:
        options.optimized_model_filepath = optimized_model_path
    if profile_prefix:  # ORT's profile goes to a file named from this prefix (else into the working directory)
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    disabled = _crashing_passes(model) if optimization == "all" else []
    if isinstance(model, onnx.ModelProto) and model.ByteSize() >= PROTOBUF_LIMIT:
        # Over protobuf's limit: hand ORT a file with external data (it maps the weights).
        with tempfile.TemporaryDirectory(prefix="lowprec-large-") as tmp:
            path = Path(tmp) / "model.onnx"
            clone = onnx.ModelProto()
            clone.CopyFrom(model)  # saving with external data rewrites the tensors it is given
            # onnx refuses a data file that exists relative to the working directory, so the
            # name is the temporary folder's own, which nothing there can hold.
            onnx.save_model(clone, path, save_as_external_data=True, all_tensors_to_one_file=True, location=f"{Path(tmp).name}.data")
            return _build(str(path), options, disabled)
    return _build(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model, options, disabled)


# ORT's NCHWc layout pass dereferences null on the Casts ORT itself inserts around float16 nodes
# it has no CPU kernel for (onnxruntime#28392: Transpose -> MatMul in float16; still in 1.31):
# building the session kills the process. lowprec's own models compute in float32 (see _float16);
# a user's float16 model file is probed in a child process, once, and built without the pass if it dies.
_NCHWC_PROBE = "import sys, onnxruntime as ort; ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
_PROBE_SECONDS = 600
_probed: dict[tuple[str, int, int], list[str]] = {}  # a model file's (path, size, mtime) -> passes to leave out


def probe_float16(model: onnx.ModelProto, path: str | Path) -> None:
    """Before ONNX Runtime sessions of a user's model file: where `model` (the file at `path`,
    parsed) computes in float16, probe a session of it in a child process, so that sessions of
    the file built later here leave out the passes that kill the process. Float32 models cost
    nothing: sessions of a path never parse the file again."""
    if computes_in_float16(model):
        _probed[_file_key(path)] = _probe(str(path))


def _crashing_passes(model: onnx.ModelProto | bytes | str) -> list[str]:
    """The ORT passes a session of `model` must go without: for a file probe_float16 found
    killing the process, ["NchwcTransformer"]; else none. Models in memory are lowprec's own,
    float32 inside (see _float16)."""
    if not isinstance(model, str):
        return []
    try:
        return _probed.get(_file_key(model), [])
    except OSError:  # no such file: ORT's own error names it
        return []


def _file_key(path: str | Path) -> tuple[str, int, int]:
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def _probe(path: str) -> list[str]:
    try:  # -I: the child imports nothing from the working directory
        died = subprocess.run([sys.executable, "-I", "-c", _NCHWC_PROBE, path], capture_output=True, check=False,
                              timeout=_PROBE_SECONDS).returncode < 0
    except subprocess.TimeoutExpired:
        died = False
    if died:
        log.warning("ONNX Runtime %s crashes building a session of this float16 model with its NCHWc layout pass "
                    "(onnxruntime#28392); running it without that pass", ort.__version__)
    return ["NchwcTransformer"] if died else []


def check_runtime(name: str) -> str:
    """`name` if it is a runtime lowprec knows and this environment has installed."""
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; expected one of: {', '.join(RUNTIMES)}")
    if name == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise ConfigError(f"runtime 'openvino' is not installed: {RUNTIMES[name]}") from None
    return name


def serving_session(model: onnx.ModelProto | bytes | str, *, runtime: str = "onnxruntime", threads: int | None = None,
                    precision: str | None = None, spinning: bool = False, profiling: bool = False):
    """A session in the runtime the model is served with: ONNX Runtime's CPU provider, or
    OpenVINO's CPU plugin (`precision`: its inference precision, None for the plugin's own
    default). Both answer get_inputs, get_outputs and run(names, feed). `profiling`: OpenVINO's
    is compiled with its node counters on, for profile(session_of=...); ONNX Runtime's profiler
    slows every run and writes a file, so its sessions never profile themselves."""
    check_runtime(runtime)
    if runtime == "openvino":
        from ._runtime_openvino import OpenVINOSession

        return OpenVINOSession(model, threads=threads, precision=precision, profiling=profiling)
    return session(model, threads=threads, spinning=spinning)


class NodeTime(Struct):
    """One node of the runtime's own graph (after its fusions) in a profile: its name, its mean
    microseconds a run, and the model's nodes it runs where the runtime records them (OpenVINO
    does; ONNX Runtime names a fused node after one of them or after its output)."""

    name: str
    micros: float
    fused: tuple[str, ...] = ()


def profile(model: bytes, feed: dict, *, runtime: str = "onnxruntime", threads: int | None = None, precision: str | None = None,
            runs: int = 5, session_of=None) -> list[NodeTime]:
    """Per-node times of `runs` runs on `feed`, after one untimed run, in the serving runtime
    (`precision`: OpenVINO's, None for its default). `session_of`: an OpenVINO serving session
    of these bytes built with `profiling`, profiled in place instead of compiling the model
    again (ONNX Runtime's is not: a session of its own profiles)."""
    if check_runtime(runtime) == "openvino":
        from ._runtime_openvino import OpenVINOSession

        sess = session_of if session_of is not None else OpenVINOSession(model, threads=threads, precision=precision, profiling=True)
        return [NodeTime(name, micros, fused) for name, micros, fused in sess.node_times(feed, runs)]
    with tempfile.TemporaryDirectory(prefix="lowprec-profile-") as tmp:
        sess = session(model, threads=threads, profile_prefix=str(Path(tmp) / "profile"))
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm = first["ts"] + first["dur"]  # the untimed run ends here
    total: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm:
            name = event["name"][: -len("_kernel_time")]
            total[name] = total.get(name, 0.0) + event["dur"]
    return [NodeTime(name, micros / runs) for name, micros in total.items()]


def check_model(model: onnx.ModelProto, runtime: str) -> None:
    """Fail early, naming the nodes, where the runtime cannot read the model: OpenVINO's ONNX
    frontend converts fewer models than ONNX Runtime runs. ONNX Runtime's own sessions, built
    for calibration, fail with the node where it cannot."""
    if check_runtime(runtime) == "openvino":
        from ._runtime_openvino import check_model as check_openvino

        check_openvino(model)


def float_precision(runtime: str) -> str:
    """What the runtime runs a float model at by default: ONNX Runtime's CPU provider f32,
    OpenVINO's plugin bf16 where the CPU has it."""
    if check_runtime(runtime) == "openvino":
        from ._runtime_openvino import default_precision

        return default_precision()
    return "f32"


def _build(source: bytes | str, options: ort.SessionOptions, disabled: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, sess_options=options, providers=PROVIDERS, disabled_optimizers=disabled or None)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/... types
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from None


def version(name: str = "onnxruntime") -> str:
    """The installed version of a serving runtime."""
    if name == "openvino":
        from ._runtime_openvino import version as openvino_version

        return openvino_version()
    return ort.__version__


NUMPY_OF_ORT = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def optimized_graph(model: onnx.ModelProto | bytes | str, *, optimization: str = "extended") -> onnx.ModelProto:
    """The graph ONNX Runtime actually runs after its fusions (QDQ groups -> integer kernels);
    weights held in external data are left there, unread."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lowprec-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        session(model, optimization=optimization, optimized_model_path=path)
        # Its weights stay out: those ORT left as they were still point at the source's external
        # data, by a path relative to the source (MiniLM as torch.export writes it), not to tmp.
        return onnx.load(path, load_external_data=False)


# Op types that run integer arithmetic on the ORT CPU provider, and their float counterparts.
INTEGER_KERNELS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger", "NhwcQLinearConv", "QLinearConvTranspose"})
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"})


def kernel_counts(model: onnx.ModelProto | bytes | str) -> tuple[int, int]:
    """(integer, float) Conv/MatMul/Gemm kernels ONNX Runtime runs after its optimisation, in
    If, Loop and Scan bodies too: how much of a QDQ model became integer arithmetic."""
    ops = [node.op_type for node in all_nodes(optimized_graph(model).graph)]
    return sum(op in INTEGER_KERNELS for op in ops), sum(op in FLOAT_KERNELS for op in ops)
