"""The only importer of onnxruntime: building sessions with explicit threads and providers."""

from __future__ import annotations

import threading

import onnx
import onnxruntime as ort

from .errors import ModelError

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
    if isinstance(model, onnx.ModelProto) and model.ByteSize() >= PROTOBUF_LIMIT:
        # Over protobuf's limit: hand ORT a file with external data (it maps the weights).
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="lowprec-large-") as tmp:
            path = Path(tmp) / "model.onnx"
            clone = onnx.ModelProto()
            clone.CopyFrom(model)  # saving with external data rewrites the tensors it is given
            onnx.save_model(clone, path, save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data")
            return _build(str(path), options)
    return _build(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model, options)


def _build(source: bytes | str, options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, sess_options=options, providers=PROVIDERS)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/... types
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from None


_warm = threading.Event()


def warm_up() -> None:
    """Start ONNX Runtime's one-time set-up (its first session in a process costs a few ms
    more than any later one) in a background thread, once per process.

    Callers start it before Python work that precedes their first session (parsing and
    preparing the model), so the two overlap: ORT releases the GIL while it builds a session.
    The warm-up session is one Identity node and is dropped; a failure in it is ignored, as
    the caller's own session reports any real problem. Not a daemon: a process that exits
    early (a bad argument) waits the few ms for it, where tearing ORT down under a session
    still being built aborts the process."""
    if _warm.is_set():
        return
    _warm.set()
    threading.Thread(target=_build_tiny, name="lowprec-ort-warm-up", daemon=False).start()


def _build_tiny() -> None:
    try:
        session(_tiny_model(), threads=1, optimization="disabled")
    except ModelError:
        pass


def _tiny_model() -> bytes:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "warm_up", [x], [y])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=7).SerializeToString()


def version() -> str:
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
    """The graph ONNX Runtime actually runs after its fusions (QDQ groups -> integer kernels)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lowprec-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        session(model, optimization=optimization, optimized_model_path=path)
        return onnx.load(path)


# Op types that run integer arithmetic on the ORT CPU provider, and their float counterparts.
INTEGER_KERNELS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger", "NhwcQLinearConv", "QLinearConvTranspose"})
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"})
