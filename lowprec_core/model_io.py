"""The only place that loads or saves ONNX: checks, preparation, sha256 identity."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from .errors import ModelError

log = logging.getLogger(__name__)

MIN_QDQ_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute)
_PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class LoadedModel:
    """A checked model and the sha256 of the file it came from (its identity everywhere)."""

    proto: onnx.ModelProto
    sha256: str
    path: Path


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Read, parse and check an ONNX file; any failure is a ModelError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    raw = path.read_bytes()
    if not raw:
        raise ModelError(f"{path}: file is empty; expected an ONNX model")
    try:
        proto = onnx.load_model_from_string(raw)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ModelError(f"{path}: not a valid ONNX model ({err.__class__.__name__}: {err})") from None
    if not proto.graph.node or not proto.opset_import:
        raise ModelError(f"{path}: not a valid ONNX model (no graph nodes or no opset_import)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: cannot read its external data: {err}") from None
    try:
        onnx.checker.check_model(proto if proto.ByteSize() < _PROTOBUF_LIMIT else str(path))
    except (onnx.checker.ValidationError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise ModelError(f"{path}: ONNX checker rejected the model: {first}") from None
    return LoadedModel(proto, hashlib.sha256(raw).hexdigest(), path)


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelError("model imports no default-domain opset")


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy ready for calibration and quantization.

    Names every node, turns Constant nodes and initializer-inputs into plain initializers,
    folds BatchNormalization into the Conv before it, upgrades to opset 13 where older,
    and runs shape inference. Deterministic: the same model gives the same result.
    """
    model = _copy(model)
    _name_nodes(model.graph)
    _constants_to_initializers(model.graph)
    _fold_batchnorm(model.graph)
    drop_unused_initializers(model.graph)
    if default_opset(model) < MIN_QDQ_OPSET:
        model = _upgrade_opset(model, MIN_QDQ_OPSET)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError) as err:
        log.warning("shape inference failed, continuing without it: %s", err)
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> str:
    """Write atomically (temp file + rename) with deterministic bytes; return the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString(deterministic=True)
    if len(data) > _PROTOBUF_LIMIT:
        raise ModelError(f"{path}: model is over 2 GB, which needs external data (not supported yet)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node reads, subgraphs (If/Loop/Scan bodies) included."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                names |= _names_read(sub)
    return names


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = _names_read(graph)
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> nodes that read it, directly or from inside one of their subgraphs."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        implicit = set()
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                implicit |= _names_read(sub)
        for name in dict.fromkeys([*node.input, *sorted(implicit)]):
            if name:
                found.setdefault(name, []).append(node)
    return found


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def _name_nodes(graph: onnx.GraphProto) -> None:
    taken = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)


_CONSTANT_ATTRS = {
    "value_float": lambda a: np.array(a.f, dtype=np.float32),
    "value_floats": lambda a: np.array(list(a.floats), dtype=np.float32),
    "value_int": lambda a: np.array(a.i, dtype=np.int64),
    "value_ints": lambda a: np.array(list(a.ints), dtype=np.int64),
}


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs:
            keep.append(node)
            continue
        attribute = node.attribute[0]
        if attribute.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attribute.t)
        elif attribute.name in _CONSTANT_ATTRS:
            tensor = numpy_helper.from_array(_CONSTANT_ATTRS[attribute.name](attribute))
        else:  # sparse or string constants stay as nodes
            keep.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    del graph.node[:]
    graph.node.extend(keep)
    # Initializers listed as graph inputs can be overridden at run time, so ORT will not
    # treat them as constants; a quantizer must.
    init_names = {init.name for init in graph.initializer}
    real_inputs = [inp for inp in graph.input if inp.name not in init_names]
    del graph.input[:]
    graph.input.extend(real_inputs)


def _fold_batchnorm(graph: onnx.GraphProto) -> None:
    inits = initializers(graph)
    users = consumers(graph)
    outputs = {o.name for o in graph.output}
    removed: set[str] = set()
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.output[0] in outputs:
            continue
        followers = users.get(conv.output[0], [])
        if len(followers) != 1 or followers[0].op_type != "BatchNormalization":
            continue
        bn = followers[0]
        params = [inits.get(name) for name in bn.input[1:5]]
        if len(bn.output) != 1 or any(p is None for p in params) or conv.input[1] not in inits:
            continue
        if len(users.get(conv.input[1], [])) != 1:
            continue  # a shared weight cannot absorb one BN
        gamma, beta, mean, var = (numpy_helper.to_array(p).astype(np.float64) for p in params)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        factor = gamma / np.sqrt(var + eps)
        weight_init = inits[conv.input[1]]
        weight = numpy_helper.to_array(weight_init).astype(np.float64)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        new_weight = (weight * factor.reshape(shape)).astype(np.float32)
        bias = np.zeros(weight.shape[0], dtype=np.float64)
        if len(conv.input) > 2 and conv.input[2]:
            if conv.input[2] not in inits or len(users.get(conv.input[2], [])) != 1:
                continue
            bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        new_bias = ((bias - mean) * factor + beta).astype(np.float32)
        weight_init.CopyFrom(numpy_helper.from_array(new_weight, weight_init.name))
        bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else f"{conv.name}_folded_bias"
        if bias_name in inits:
            inits[bias_name].CopyFrom(numpy_helper.from_array(new_bias, bias_name))
        else:
            graph.initializer.append(numpy_helper.from_array(new_bias, bias_name))
            if len(conv.input) == 2:
                conv.input.append(bias_name)
            else:
                conv.input[2] = bias_name
        conv.output[0] = bn.output[0]
        removed.add(bn.name)
    if removed:
        keep = [node for node in graph.node if node.name not in removed]
        del graph.node[:]
        graph.node.extend(keep)


def _upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, opset)
    except Exception as err:  # the converter raises bare RuntimeError/IndexError per op
        raise ModelError(f"cannot upgrade the model from opset {default_opset(model)} to {opset}: {err}") from None
    log.info("upgraded model from opset %d to %d", default_opset(model), opset)
    return upgraded
