"""The only place that loads or saves ONNX: checks, preparation, sha256 identity."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from . import _float16 as float16
from . import _simplify as simplify
from ._digest import sha256
from ._config import check_input_sizes
from ._errors import ConfigError, ModelError, one_line
from ._graph import (
    all_graphs, all_names, all_tensors, all_nodes, attribute, dim_sizes, drop_unused_initializers, names_defined_here, rename, shown_sizes, subgraphs,
    topological_sort,
)
from ._struct import Struct

# ONNX's operator-schema registry fills itself on first use (about 15 ms). Do it when this module
# is imported, as importing onnxruntime.quantization does, rather than inside the first load.
onnx.defs.has("Conv")

log = logging.getLogger(__name__)

MIN_QDQ_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute)
_PROTOBUF_LIMIT = 2**31 - 1


class LoadedModel(Struct):
    """A checked model and the sha256 of the file it came from (its identity everywhere)."""

    proto: onnx.ModelProto
    sha256: str
    path: Path
    data_files: tuple[str, ...] = ()  # external data, relative to path's folder


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = sha256(size=os.path.getsize(path))
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Read, parse and check an ONNX file (and its external data files); any failure is a
    ModelError naming the file. The sha256 covers the external data too."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    raw = path.read_bytes()
    if not raw:
        raise ModelError(f"{path}: file is empty; expected an ONNX model")
    try:
        proto = onnx.load_model_from_string(raw)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ModelError(f"{path}: not a valid ONNX model ({err.__class__.__name__}: {one_line(err)})") from None
    if not proto.graph.node or not proto.opset_import:
        raise ModelError(f"{path}: not a valid ONNX model (no graph nodes or no opset_import)")
    data_files = external_data_files(proto)
    targets = [(path.parent / location).resolve() for location in data_files]
    for location, target in zip(data_files, targets):
        if path.parent.resolve() not in target.parents or not target.is_file():
            raise ModelError(f"{path}: external data {location!r} is missing or outside the model's folder")
    digest = sha256(raw, size=len(raw) + sum(target.stat().st_size for target in targets))
    for target in targets:
        with open(target, "rb") as handle:  # streamed: external data can be larger than memory
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    if data_files:
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError, MemoryError) as err:
            raise ModelError(f"{path}: cannot read its external data: {one_line(err)}") from None
    try:
        # The file's own bytes when they hold the whole model: no second serialization.
        onnx.checker.check_model(raw if not data_files else (str(path) if proto.ByteSize() >= _PROTOBUF_LIMIT else proto))
    except (onnx.checker.ValidationError, ValueError) as err:
        _mend(proto, err, path)
    return LoadedModel(proto, digest.hexdigest(), path, tuple(data_files))


def _mend(proto: onnx.ModelProto, err: Exception, path: Path) -> None:
    """Mend in place what the checker refuses and ONNX Runtime loads anyway, where the mend is
    certain (each one logged), or raise ModelError naming what is wrong."""
    untyped = _untyped(proto.graph.input)
    if untyped:
        raise ModelError(f"{path}: input {untyped[0]!r} declares no shape; ONNX Runtime runs it, but lowprec needs "
                         "its rank to find the batch axis: give the input its sizes first (lowprec_core.fix_input_shapes(model, "
                         f"{{{untyped[0]!r}: (\"batch\", ...)}}) and save it)") from None
    said, untried = [], list(_MENDS)
    while untried and proto.ByteSize() < _PROTOBUF_LIMIT:  # one complaint at a time, each mend once at most
        found = next(((mend, text) for mend in untried if (text := mend(proto, str(err))) is not None), None)
        if found is None:
            break
        untried.remove(found[0])
        said.append(found[1])
        try:
            onnx.checker.check_model(proto)
        except (onnx.checker.ValidationError, ValueError) as again:
            err = again
            continue
        for text in said:  # only mends that made the model pass are worth a word
            log.warning("%s: %s", path, text)
        return
    raise ModelError(f"{path}: ONNX checker rejected the model: {one_line(err, 600)}") from None


def _sort_nodes(proto: onnx.ModelProto, complaint: str) -> str | None:
    """Nodes out of order: sorted. ORT's own float16 converter (keep_io_types) appends the input
    Casts last, and ORT loads what it writes."""
    if "topologically sorted" not in complaint:
        return None
    try:
        for graph in list(all_graphs(proto.graph)):
            topological_sort(graph)
    except RuntimeError:  # a cycle: no order fixes it
        return None
    return "its nodes are out of order (ONNX Runtime sorts them on load, the ONNX checker does not); sorted them"


def _type_outputs(proto: onnx.ModelProto, complaint: str) -> str | None:
    """Graph outputs declared by name alone, or with a type and no shape (the usual way of
    exposing an intermediate tensor: make_tensor_value_info(name, FLOAT, None)): typed from shape
    inference, which must know each one's element type and rank."""
    untyped = _untyped(proto.graph.output)
    if not untyped or not ("Field 'shape'" in complaint or "Field 'type'" in complaint):
        return None
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    typed = [value for value in bare.graph.output if value.name not in untyped]
    del bare.graph.output[:]
    bare.graph.output.extend(typed)  # the others' types land in value_info
    try:
        topological_sort(bare.graph)  # inference reads nodes in order; _sort_nodes may not have run yet
    except RuntimeError:
        return None
    inferred = _infer_shapes(bare).graph
    known = {value.name: value.type for value in [*inferred.value_info, *inferred.input]}
    known.update((init.name, onnx.helper.make_tensor_type_proto(init.data_type, init.dims)) for init in inferred.initializer)
    for value in proto.graph.output:
        if value.name in untyped:
            found = known.get(value.name)
            if found is None or not found.tensor_type.elem_type or not found.tensor_type.HasField("shape"):
                return None
            value.type.CopyFrom(found)
    return (f"output(s) {', '.join(untyped)} declare no type or no shape (ONNX Runtime infers them, the ONNX checker "
            "does not); took them from shape inference")


_MENDS = (_sort_nodes, _type_outputs)


def _untyped(values) -> list[str]:
    """The tensors among `values` (graph inputs or outputs) with no element type or no shape."""
    return [value.name for value in values
            if not value.type.HasField("tensor_type") and not value.type.WhichOneof("value")
            or value.type.HasField("tensor_type") and (not value.type.tensor_type.elem_type or not value.type.tensor_type.HasField("shape"))]


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """Relative locations of the external data files a model refers to, sorted."""
    locations = set()
    for tensor in all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in tensor.external_data}
            locations.add(entry.get("location", ""))
    return sorted(locations)


def model_bytes(loaded: "LoadedModel") -> int:
    """Size on disk, external data included."""
    return loaded.path.stat().st_size + sum((loaded.path.parent / f).stat().st_size for f in loaded.data_files)


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelError("model imports no default-domain opset")


# input name -> one size per axis: an integer, or a name for a size left free
InputShapes = Mapping[str, Sequence[int | str]]


def prepare(model: onnx.ModelProto, runtime: str = "onnxruntime", input_shapes: InputShapes | None = None) -> onnx.ModelProto:
    """Return a copy ready for calibration and quantization.

    Gives the inputs the sizes `input_shapes` fixes (see fix_input_shapes), names every node,
    computes a float16 model in float32 behind its float16 inputs and outputs (see _float16),
    turns Constant nodes (and ConstantOfShape of a constant shape, and
    Identity/Cast/Transpose/Reshape/Squeeze/Unsqueeze of constants) and initializer-inputs into
    plain initializers,
    folds BatchNormalization into the Conv or Gemm before it, upgrades to opset 13 where older,
    runs shape inference, and then rewrites the tanh GELU into ONNX Runtime's FastGelu (and, for
    OpenVINO, a variance written as E[x^2] - E[x]^2 into E[(x - E[x])^2]).
    `runtime`: the runtime that serves the model; only the rewrites that pay there run (see
    simplify). Deterministic: the same model gives the same result.
    """
    model = fix_input_shapes(model, input_shapes) if input_shapes else _copy(model)
    _name_nodes(model.graph)
    _unique_body_names(model.graph, names_defined_here(model.graph), set(all_names(model.graph)))
    _constants_to_initializers(model.graph)
    if float16.computes_in_float16(model):
        float16.widen(model)
    # IR 3 required every initializer to be a graph input too (the ONNX model zoo's opset 7-9
    # CNNs); IR 4 lifted that. The inputs are gone now, so the model must say IR 4 at least or
    # the opset converter finds its weights undefined.
    model.ir_version = max(model.ir_version, 4)
    simplify.simplify(model.graph, runtime)
    drop_unused_initializers(model.graph)
    if default_opset(model) < MIN_QDQ_OPSET:
        model = _upgrade_opset(model, MIN_QDQ_OPSET)
    model = _infer_shapes(model)
    simplify.fuse_for_runtime(model, runtime)
    return model


def fix_input_shapes(model: onnx.ModelProto, shapes: InputShapes) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs have the sizes `shapes` gives, input name -> one size
    per axis: an integer fixes that axis, a name leaves it free under that name (the batch).

    A model exported with sizes that are fixed in use left free (silero VAD's 576 samples per
    call) can have shape-dependent control flow, an If whose branches differ in rank, that a
    runtime compiling ahead of time cannot resolve; OpenVINO cannot read such a model until the
    size is fixed. The sizes must fit the model: ConfigError names the input and what it has."""
    try:
        check_input_sizes({name: tuple(dims) for name, dims in shapes.items()})
    except ValueError as err:
        raise ConfigError(str(err)) from None
    model = _copy(model)
    inits = {init.name for init in model.graph.initializer}
    inputs = {value.name: value for value in model.graph.input if value.name not in inits}
    for name, dims in shapes.items():
        if name not in inputs:
            raise ConfigError(f"input shape for {name!r}: the model has no such input; its inputs: {', '.join(inputs)}")
        tensor = inputs[name].type.tensor_type
        if not tensor.HasField("shape"):  # rank unknown: any rank fits
            tensor.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in dims)
        shape = tensor.shape
        have = dim_sizes(shape.dim)
        if len(dims) != len(have):
            raise ConfigError(f"input shape for {name!r}: {len(dims)} sizes given ({shown_sizes(dims)}); the model's input "
                              f"{shown_sizes(have)} has {len(have)}")
        for axis, (size, old) in enumerate(zip(dims, have)):
            if isinstance(old, int) and size != old:
                raise ConfigError(f"input shape for {name!r}: {size} at axis {axis}, where the model's input "
                                  f"{shown_sizes(have)} has the fixed size {old}")
        for dim, size in zip(shape.dim, dims):
            if isinstance(size, int):
                dim.dim_value = size  # clears dim_param: the two share a oneof
            else:
                dim.dim_param = size
    return model


def at_input_sizes_of(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `reference` with the input sizes `candidate` fixes where `reference` leaves them
    free (an INT8 model quantized with input_shapes, and its FP32 source); None where there are none."""
    fixed = {value.name: value.type.tensor_type.shape.dim for value in candidate.graph.input}
    model = _copy(reference)
    changed = False
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        theirs = fixed.get(value.name)
        if theirs is None or len(theirs) != len(dims):
            continue
        for dim, other in zip(dims, theirs):
            if not (dim.HasField("dim_value") and dim.dim_value > 0) and other.HasField("dim_value") and other.dim_value > 0:
                dim.dim_value = other.dim_value
                changed = True
    return model if changed else None


_WEIGHT_PAYLOAD = 4096  # bytes: a float initializer larger than this goes round shape inference


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference on `model` (mutated meanwhile; on failure, returned as it was).

    Inference reads a weight's type and dims, never its values: the only values it folds are
    small shape-like inputs (Reshape's shape, Resize's scales). So the main graph's large float
    initializers travel through it without their payload, which ONNX's C++ side would otherwise
    serialize, parse and copy back (90 MB each way on MiniLM), and go back in by name after."""
    payloads = {}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and (len(init.raw_data) if init.HasField("raw_data") else 4 * len(init.float_data)) > _WEIGHT_PAYLOAD:
            kept = onnx.TensorProto()
            kept.CopyFrom(init)
            payloads[init.name] = kept
            init.ClearField("raw_data")
            init.ClearField("float_data")
    result = model
    try:
        result = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError) as err:
        log.warning("shape inference failed, continuing without it: %s", err)
    for init in result.graph.initializer:
        if init.name in payloads:
            init.CopyFrom(payloads[init.name])
    return result


class SavedModel(Struct):
    sha256: str  # of the file and its external data, as load_model computes it
    bytes: int


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    verify: Callable[[str], object] | None = None,
) -> SavedModel:
    """Write atomically with deterministic bytes.

    Models over the 2 GB protobuf limit (or with external_data=True) keep their weights in
    `<name>.data` beside the file. Everything is staged under temporary names, `verify` (if
    given) runs on the staged file, and only then are the files renamed into place, the data
    file first: no reader ever sees a half-written or unverified model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = model.ByteSize() >= _PROTOBUF_LIMIT
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        location = f"{path.name}.data"
        if external_data:
            staged.write_bytes(_with_external_data(model, Path(tmp), location).SerializeToString(deterministic=True))
        else:
            staged.write_bytes(model.SerializeToString(deterministic=True))
        if verify is not None:
            verify(str(staged))
        data = Path(tmp) / location  # absent when every tensor is under the threshold
        size = staged.stat().st_size + (data.stat().st_size if data.exists() else 0)
        digest = sha256(staged.read_bytes(), size=size)
        if data.exists():
            digest.update(data.read_bytes())
            os.replace(data, path.parent / location)
        os.replace(staged, path)
    return SavedModel(digest.hexdigest(), size)


_EXTERNAL_THRESHOLD = 1024  # bytes, as onnx.save_model counts them (sys.getsizeof of the raw data)


def _with_external_data(model: onnx.ModelProto, folder: Path, location: str) -> onnx.ModelProto:
    """A copy of `model` whose initializers of 1 kB or more (in bodies too) point into
    folder/location, written there. onnx.save_model does this too, but first refuses where
    `location` exists relative to the working directory: a second `quantize --out int8.onnx`
    run in int8.onnx's own folder raised FileExistsError for int8.onnx.data."""
    clone = _copy(model)
    for graph in all_graphs(clone.graph):
        for tensor in graph.initializer:
            if tensor.HasField("raw_data") and sys.getsizeof(tensor.raw_data) >= _EXTERNAL_THRESHOLD:
                onnx.external_data_helper.set_external_data(tensor, location)
    return onnx.external_data_helper.write_external_data_tensors(clone, str(folder))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def _name_nodes(graph: onnx.GraphProto, taken: set[str] | None = None) -> None:
    """Names every unnamed node, in If/Loop/Scan bodies too, uniquely across the whole model."""
    if taken is None:
        taken = {node.name for node in all_nodes(graph) if node.name}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
        for sub in subgraphs(node):
            _name_nodes(sub, taken)


def _unique_body_names(graph: onnx.GraphProto, seen: set[str], used: set[str]) -> None:
    """Renames values an If/Loop/Scan body defines under a name another scope defines too
    (ONNX allows then and else to both call theirs `out`): statistics are per tensor name, so
    each name must mean one tensor across the whole model. Renamed deterministically.
    `seen`: names defined so far; `used`: every name in the model, new ones included."""
    for node in graph.node:
        for sub in subgraphs(node):
            mapping = {}
            for name in sorted(names_defined_here(sub) & seen):
                index = 1
                while f"{name}__{index}" in used:
                    index += 1
                mapping[name] = f"{name}__{index}"
                used.add(mapping[name])
            if mapping:
                rename(sub, mapping)
            seen |= names_defined_here(sub)
            _unique_body_names(sub, seen, used)


_CONSTANT_ATTRS = {
    "value_float": lambda a: np.array(a.f, dtype=np.float32),
    "value_floats": lambda a: np.array(list(a.floats), dtype=np.float32),
    "value_int": lambda a: np.array(a.i, dtype=np.int64),
    "value_ints": lambda a: np.array(list(a.ints), dtype=np.int64),
}


_FOLDED_FILL_LIMIT = 1 << 24  # elements: a ConstantOfShape larger than this stays a node


def _filled(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    """ConstantOfShape of a constant shape, as the tensor it makes (onnx's light test models
    build every weight this way); None when the shape is computed or the tensor is huge."""
    shape_init = inits.get(node.input[0]) if node.input else None
    if shape_init is None:
        return None
    shape = numpy_helper.to_array(shape_init).astype(np.int64).reshape(-1)
    if (shape < 0).any() or int(np.prod(shape)) > _FOLDED_FILL_LIMIT:
        return None
    value = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1, np.float32))
    return numpy_helper.from_array(np.full(tuple(shape), value.reshape(-1)[0], dtype=value.dtype))


def _axes(node: onnx.NodeProto, values: list[np.ndarray]) -> tuple[int, ...] | None:
    """Squeeze/Unsqueeze axes: an input from opset 13, an attribute before."""
    axes = values[1] if len(values) > 1 else attribute(node, "axes")
    return None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _reshape(node: onnx.NodeProto, values: list[np.ndarray]) -> np.ndarray:
    data, shape = values[0], [int(d) for d in values[1].reshape(-1)]
    if not attribute(node, "allowzero", 0):  # 0 copies the input's dimension
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return data.reshape(shape)


def _squeeze(node: onnx.NodeProto, values: list[np.ndarray]) -> np.ndarray:
    axes = _axes(node, values)
    return np.squeeze(values[0], axis=axes) if axes is not None else np.squeeze(values[0])


def _unsqueeze(node: onnx.NodeProto, values: list[np.ndarray]) -> np.ndarray:
    axes = _axes(node, values)
    rank = values[0].ndim + len(axes)
    return np.expand_dims(values[0], tuple(sorted(a % rank for a in axes)))


# Ops that only copy, rearrange or re-type a constant: exporters leave them on weights (tied
# weights behind Identity, fp16 storage behind Cast, a transposed weight behind Transpose), and
# a layer whose weight is a node output has no constant weight to quantize.
_FOLDABLE: dict[str, Callable[[onnx.NodeProto, list[np.ndarray]], np.ndarray]] = {
    "Identity": lambda node, v: v[0],
    "Cast": lambda node, v: v[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attribute(node, "to"))),
    "Transpose": lambda node, v: np.transpose(v[0], attribute(node, "perm")),
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
}


def _folded(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    """The tensor a _FOLDABLE node makes from constant inputs, or None."""
    if len(node.output) != 1 or not all(name in inits for name in node.input if name):
        return None
    values = [numpy_helper.to_array(inits[name]) for name in node.input if name]
    if not values or values[0].dtype == object:
        return None
    try:
        return numpy_helper.from_array(np.ascontiguousarray(_FOLDABLE[node.op_type](node, values)))
    except (ValueError, TypeError, KeyError, IndexError):  # shapes that do not fit: ORT will say so
        return None


def _constant(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    """The tensor a node makes from constants alone, or None where it stays a node."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in _FOLDABLE:
        return _folded(node, inits)
    if node.op_type == "ConstantOfShape":
        return _filled(node, inits)
    if node.op_type != "Constant":
        return None
    value = node.attribute[0]
    if value.name == "value":
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value.t)
        return tensor
    if value.name in _CONSTANT_ATTRS:
        return numpy_helper.from_array(_CONSTANT_ATTRS[value.name](value))
    return None  # sparse or string constants stay as nodes


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constants become initializers of the graph that holds them, in If/Loop/Scan bodies too."""
    for node in graph.node:
        for sub in subgraphs(node):
            _constants_to_initializers(sub)
    outputs = {o.name for o in graph.output}
    inits = {init.name: init for init in graph.initializer}
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        tensor = _constant(node, inits) if node.output and node.output[0] not in outputs else None
        if tensor is None:
            keep.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        inits[tensor.name] = tensor
    del graph.node[:]
    graph.node.extend(keep)
    # Initializers listed as graph inputs can be overridden at run time, so ORT will not
    # treat them as constants; a quantizer must.
    init_names = {init.name for init in graph.initializer}
    real_inputs = [inp for inp in graph.input if inp.name not in init_names]
    del graph.input[:]
    graph.input.extend(real_inputs)


def _upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, opset)
    except Exception as err:  # the converter raises bare RuntimeError/IndexError per op
        raise ModelError(f"cannot upgrade the model from opset {default_opset(model)} to {opset}: {err}") from None
    log.info("upgraded model from opset %d to %d", default_opset(model), opset)
    return upgraded
