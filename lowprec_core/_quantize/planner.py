"""Decide what to quantize; edit nothing. The plan is JSON: it goes into reports and diffs."""

from __future__ import annotations

import difflib
import logging
import re

import numpy as np
import onnx
from onnx import numpy_helper

from .._calibration.stats import Statistics
from .._config import QuantConfig
from .._errors import ConfigError
from .._graph import all_nodes, attribute as node_attribute, body_model, consumers, if_bodies, initializers, subgraphs
from .._simplify import RUNTIME_DOMAIN
from .._ops import (
    ALL_INPUTS, FUSABLE_ACTIVATIONS, INTEGER_JOINS, QUANTIZABLE, READERS, RUNTIME_INTEGER_OPS, TABLE_MIN_ELEMENTS, TABLE_MIN_SQNR_DB, TARGETS, TRANSPARENT, GraphView,
    absorbed_by_quantizer, useful_range,
)
from .overflow import overflow_channels
from .params import QuantizedWeights, activation_params
from .plan import ActivationQuant, BiasQuant, FusedActivation, QuantPlan, TableQuant, WeightQuant
from .placement import (
    after_activation, channel_split, computes_shapes, drop_float_fused, feeds_reads, float_fused, layer_bias, output_channels, ranks,
    integer_chains, lone_layers, requantized_anyway, sample_sizes, under_floor,
)
from .ranges import activation_range, two_levels

log = logging.getLogger(__name__)


def statistic_requests(
    model: onnx.ModelProto,
    target: str = "cpu",
    *,
    bodies: bool = True,
    config: QuantConfig | None = None,
    ignored: set[str] | None = None,
) -> dict[str, int | None]:
    """Every tensor any plan for this model and target may need, mapped to the axis for
    per-channel statistics (the inputs of quantizable nodes) or None (tensor-wide only).

    Without `config`, independent of preset and ignored scope, and for the row `target`
    calibrates for (`openvino-avx2`: `openvino`'s layers), so one calibration (a stats file)
    serves every config and either row. With it, for plans of that config and of it with more layers
    ignored (the accuracy-aware search's):
    - only the layers the plan can choose (`_choose`: a layer under the config's reduction
      floor, say, stays float, and nothing reads its input or output statistics), and the
      inputs SmoothQuant may smooth where it runs (a transformer); with channel alignment on,
      every layer, as it reads Conv pairs the plan may leave float;
    - a Conv's output before an activation the config fuses is left out, as only the
      activation's output is quantized.
    `ignored`: the config's ignored scope, resolved over the whole model (If bodies pass it
    down). `bodies`: include the tensors of If bodies (planned as models of their own).
    """
    if config is not None and ignored is None:
        ignored = resolve_ignored(model, config.ignore)
    graph = model.graph
    inits = initializers(graph)
    users = consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    if config is None:  # a statistics file: for the row it is collected for (ops.Target.calibrates_for)
        target = TARGETS[target].calibrates_for or target
    ops = TARGETS[target].ops
    candidates = []
    if config is not None and not config.channel_alignment:
        chosen = _choose(model, config, ignored, inits, users, _float_tensors(model), ranks(model), {})
        candidates = [(node, TARGETS[target].layers[node.op_type]) for node, _, _ in chosen]
    else:
        for node in graph.node:
            rule = TARGETS[target].layers.get(node.op_type) if node.op_type in ops and node.domain in ("", "ai.onnx") else None
            if rule is not None and len(node.input) > rule.weight_input and node.input[rule.weight_input] in inits:
                candidates.append((node, rule))
    needed: dict[str, int | None] = {}
    for node, rule in candidates:
        for i in rule.activation_inputs:
            if i < len(node.input) and node.input[i]:
                needed[node.input[i]] = rule.input_channel_axis
    reads = set(needed)
    if config is not None and not config.channel_alignment and resolve_model_type(model, config.model_type) == "transformer":
        # SmoothQuant runs before the plan and reads the inputs it may smooth, whether or not
        # the plan then quantizes their layers.
        for tensor, readers in smoothing_groups(graph, config, ignored).items():
            needed.setdefault(tensor, TARGETS[target].layers[readers[0].op_type].input_channel_axis)
    # Outputs only where a plan can quantize them: the same rule plan() applies, over every
    # candidate (an ignored scope only removes readers, so this stays a superset).
    layer_outputs: set[str] = set()  # every tensor a plan may quantize as a layer's integer output
    for node, rule in candidates:
        followers = users.get(node.output[0], [])
        outputs = [node.output[0]] + [f.output[0] for f in followers if f.op_type in FUSABLE_ACTIVATIONS]
        layer_outputs.update(outputs)
        if config is not None and rule.integer_output_required and _fuses_activation(node, followers, graph_outputs, ignored, inits, config):
            outputs = outputs[1:]
        for tensor in outputs:
            if _output_required(rule, TARGETS[target], tensor, users) or feeds_reads(tensor, reads, users):
                needed.setdefault(tensor, None)
        # Ranks are known only after calibration: assume a MatMul's input is 2-D (a superset).
        fused = float_fused(node, rule, users, graph_outputs, input_rank=2)
        if fused is not None:
            needed.setdefault(fused[0], None)
            layer_outputs.add(fused[0])
    convs = [node for node, _ in candidates if node.op_type == "Conv"]
    for node in _join_candidates(graph, TARGETS[target].integer_joins, ignored or set(), inits, users, convs, reads | layer_outputs, reads):
        for tensor in node.input:
            needed.setdefault(tensor, None)
    for node in _integer_op_candidates(graph, config, target, ignored or set(), layer_outputs, reads, users):
        for tensor in [*_integer_inputs(node), node.output[0]]:
            if tensor not in inits:
                needed.setdefault(tensor, None)
    for node, attribute, body in if_bodies(graph) if bodies else []:  # quantize_model plans each as a model of its own
        if has_layers(body):
            for tensor, axis in statistic_requests(body_model(model, node, attribute)[0], target, config=config, ignored=ignored).items():
                needed.setdefault(tensor, axis)
    return dict(sorted(needed.items()))


def _integer_op_candidates(graph: onnx.GraphProto, config: QuantConfig | None, target: str, ignored: set[str],
                           layer_outputs: set[str], reads: set[str], users) -> list[onnx.NodeProto]:
    """The weightless ops pass 4 of plan may run on integers, from the graph alone: the same
    fixpoint over every tensor a layer may write as an integer output (a superset, so a chain of
    Adds in an LSTM cell that no quantized layer feeds asks for no statistics). Without a
    config, the target's rows and the runtime's."""
    row = TARGETS[target]
    enabled, gates = config.integer_op_rows if config is not None else (
        row.integer_ops | RUNTIME_INTEGER_OPS[row.runtime][0], row.integer_op_float_inputs | RUNTIME_INTEGER_OPS[row.runtime][1])
    return _integer_fixpoint(graph, enabled, gates, ignored, layer_outputs, reads, users)


def has_layers(graph: onnx.GraphProto) -> bool:
    """Whether `graph` or a body nested in it holds a node of a quantizable op type."""
    return any(node.op_type in QUANTIZABLE for node in all_nodes(graph))


NODE_PREFIX = "node:"  # an ignored-scope entry that is a node's name, never an op type


def node_entries(model: onnx.ModelProto, names) -> tuple[str, ...]:
    """Ignored-scope entries for the nodes `names`: each name itself, or node:NAME where an op
    type of the model is spelled the same (skl2onnx names its first MatMul "MatMul": ignoring
    that node by name ignored every MatMul)."""
    op_types = {node.op_type for node in all_nodes(model.graph)}
    return tuple(f"{NODE_PREFIX}{name}" if name in op_types else name for name in names)


def resolve_ignored(model: onnx.ModelProto, ignore: tuple[str, ...]) -> set[str]:
    """Node names for entries that are op types, node names, node:NAME or `re:` patterns, in
    the main graph and in If/Loop/Scan bodies; unknown entries fail. A bare entry that is both
    an op type and a node's name means the op type."""
    nodes = list(all_nodes(model.graph))
    names = [node.name for node in nodes]
    op_types = {node.op_type for node in nodes}
    ignored: set[str] = set()
    for entry in ignore:
        if entry.startswith(NODE_PREFIX):
            if entry[len(NODE_PREFIX):] not in names:
                raise ConfigError(f"ignored scope {entry!r}: the model has no node named {entry[len(NODE_PREFIX):]!r}")
            ignored.add(entry[len(NODE_PREFIX):])
        elif entry.startswith("re:"):
            try:
                pattern = re.compile(entry[3:])
            except re.error as err:
                raise ConfigError(f"ignored scope {entry!r}: bad regular expression ({err})") from None
            hits = {n for n in names if pattern.fullmatch(n)}
            if not hits:
                raise ConfigError(f"ignored scope {entry!r} matches no node name")
            ignored |= hits
        elif entry in op_types:
            ignored |= {node.name for node in nodes if node.op_type == entry}
        elif entry in names:
            ignored.add(entry)
        else:
            near = difflib.get_close_matches(entry, names + sorted(op_types), n=3)
            hint = f"; did you mean: {', '.join(near)}" if near else ""
            raise ConfigError(f"ignored scope {entry!r} is neither a node name nor an op type in this model{hint}")
    return ignored


def plan(model: onnx.ModelProto, stats: Statistics, config: QuantConfig, *, ignored: set[str] | None = None,
         quantized: QuantizedWeights | None = None) -> QuantPlan:
    """Decide per node: quantize (which inputs, weights, bias, output) or skip (why).

    Pass 1 (`_choose`) picks the layers from the graph alone; pass 2 leaves float those ORT
    would fuse into a float kernel; pass 3 (`_Placer`) places, layer by layer in graph order,
    the input quantizers, the output quantizer (an op whose integer kernel needs one, Conv,
    always gets it; MatMul and Gemm only where a quantized node reads the output, so no
    requantize pair is spent on a value used in float anyway), the weight and the bias.
    `ignored`: the config's ignored scope resolved to node names, where the caller has it.
    `quantized`: the model's weights as quantized so far (the overflow check quantizes each
    weight it reads; the transform reuses them), where the caller keeps them.
    """
    if ignored is None:
        ignored = resolve_ignored(model, config.ignore)
    graph = model.graph
    inits, users = initializers(graph), consumers(graph)
    known_ranks = ranks(model)
    skipped: dict[str, str] = {}

    def rank(tensor: str) -> int:
        """Shape inference's rank, else calibration's (a Reshape to a computed shape)."""
        entry = stats.tensors.get(tensor)
        return known_ranks.get(tensor, entry.rank if entry is not None else -1)

    chosen = _choose(model, config, ignored, inits, users, _float_tensors(model), known_ranks, skipped)
    graph_outputs = {o.name for o in graph.output}
    chosen = drop_float_fused(chosen, TARGETS[config.target].layers, users, graph_outputs, skipped, rank)
    nested = _nested_layers(graph)
    skipped.update(nested)
    if nested and not chosen:
        log.warning("nothing to quantize in the main graph; %d layers inside Loop/Scan bodies stay float", len(nested))

    placer = _Placer(graph, stats, config, ignored, chosen, rank, inits, users, graph_outputs,
                     quantized if quantized is not None else QuantizedWeights(inits))
    for node, act_inputs, weight_name in chosen:
        placer.place(node, act_inputs, weight_name)
    for node in _integer_joins(graph, placer, chosen, ignored):
        placer.integer_join(node)
    integer = _integer_ops(graph, placer, *config.integer_op_rows, ignored)
    for node in integer:
        placer.integer_op(node)
    tables = _tables(TARGETS[config.target].tables, ignored, inits, users, graph_outputs, placer.quantized, skipped)
    log.info("plan: %d nodes quantized, %d skipped, %d activations fused", len(chosen), len(skipped), len(placer.fused))
    return QuantPlan(
        model_sha256=stats.model_sha256,
        config=config,
        activations=list(placer.activations.values()),
        weights=list(placer.weights.values()),
        biases=placer.biases,
        fused=placer.fused,
        nodes=[node.name for node, _, _ in chosen],
        skipped=skipped,
        ignored=sorted(ignored),
        integer_ops=[node.name for node in integer],
        tables=tables,
    )


def _tables(enabled: bool, ignored: set[str], inits, users, graph_outputs: set[str], quantized: QuantizedWeights,
            skipped: dict[str, str]) -> list[TableQuant]:
    """The embedding tables to store in 8 bits (Target.tables): float32 [rows, width] constants
    of TABLE_MIN_ELEMENTS or more that only Gathers read, row by row (axis 0), at computed
    indices, none of them in the ignored scope. One whose single grid keeps less than
    TABLE_MIN_SQNR_DB of it (a few outlying values set the scale) stays float, its Gathers
    in `skipped` with the figure."""
    if not enabled:
        return []
    found = []
    for name in sorted(inits):
        init, readers = inits[name], users.get(name, [])
        if (init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2 or init.dims[0] * init.dims[1] < TABLE_MIN_ELEMENTS
                or not readers or name in graph_outputs):
            continue
        if not all(node.op_type == "Gather" and node.input[0] == name and node_attribute(node, "axis", 0) in (0, -2)
                   and node.input[1] not in inits and node.name not in ignored for node in readers):
            continue
        table = TableQuant(initializer=name, readers=sorted(node.name for node in readers))
        kept = quantized.kept_db(table.weight())
        if kept < TABLE_MIN_SQNR_DB:
            for reader in table.readers:
                skipped[reader] = (f"embedding table {name!r}: 8 bits on one grid keep {kept:.1f} dB of it, under "
                                   f"{TABLE_MIN_SQNR_DB:.0f} dB (a few outlying values set its scale)")
            continue
        found.append(table)
    return found


class _Placer:
    """Pass 3 of `plan`: the quantizers of the chosen layers, one layer at a time in graph order
    (a tensor's entry may depend on one placed before it: a shared grid, an integer output)."""

    def __init__(self, graph: onnx.GraphProto, stats: Statistics, config: QuantConfig, ignored: set[str], chosen, rank,
                 inits: dict[str, onnx.TensorProto], users: dict[str, list[onnx.NodeProto]], graph_outputs: set[str],
                 quantized: QuantizedWeights) -> None:
        self.stats, self.config, self.ignored, self.rank = stats, config, ignored, rank
        self.quantized = quantized
        self.target = TARGETS[config.target]
        self.inits, self.users, self.graph_outputs = inits, users, graph_outputs
        self.quantized_reads = {name for _, act_inputs, _ in chosen for name in act_inputs}
        self.input_readers: dict[str, list[str]] = {}
        for node, act_inputs, _ in chosen:
            for name in act_inputs:
                self.input_readers.setdefault(name, []).append(node.name)
        self.layer_ops = {node.name: node.op_type for node, _, _ in chosen}
        self.view = GraphView(
            {name: numpy_helper.to_array(t) for name, t in self.inits.items() if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) <= 1},
            {out: node for node in graph.node for out in node.output},
        )
        self.activations: dict[str, ActivationQuant] = {}
        self.weights: dict[str, WeightQuant] = {}
        self.biases: list[BiasQuant] = []
        self.fused: list[FusedActivation] = []

    def place(self, node: onnx.NodeProto, act_inputs: list[str], weight_name: str) -> None:
        rule = self.target.layers[node.op_type]
        for name in act_inputs:
            self._tensor(name, output=False)
        self._output(node, rule, act_inputs)
        self._bias(node, rule, act_inputs, self._weight(node, rule, act_inputs, weight_name))

    def integer_op(self, node: onnx.NodeProto) -> None:
        """The quantizers of a weightless op run on integers: any float input it reads (the
        output of a bounded activation), and its output: on its own grid, or its input's."""
        for tensor in _integer_inputs(node):
            if tensor not in self.activations or self.activations[tensor].readers is not None:
                self.input_readers.setdefault(tensor, []).append(node.name)
                self._tensor(tensor, output=False)
        output = node.output[0]
        if READERS[node.op_type].keeps_grid:
            self.activations[output] = self.activations[node.input[0]].model_copy(update={"tensor": output, "readers": None})
        else:
            self._tensor(output, output=True)

    def integer_join(self, node: onnx.NodeProto) -> None:
        """Every input of a join the runtime runs on integers (Target.integer_joins) through its
        quantizer: a conv's output on every reader, a layer's input for this reader too."""
        for tensor in node.input:
            entry = self.activations.get(tensor)
            if entry is None:
                self._tensor(tensor, output=True)
            elif entry.readers is not None:
                self.input_readers[tensor].append(node.name)
                self._tensor(tensor, output=False)

    def _feeds_quantized(self, tensor: str) -> bool:
        return feeds_reads(tensor, self.quantized_reads, self.users)

    def _grid_source(self, name: str) -> ActivationQuant | None:
        """The quantized tensor `name` is a pure rearrangement of (MaxPool, Reshape, ...), if any.

        Sharing its scale and zero point lets ORT run the op on integers and drop the
        DQ -> op -> Q pair around it, instead of requantizing to a grid of its own."""
        producer = self.view.producers.get(name)
        for _ in range(8):
            if producer is None or producer.op_type not in TRANSPARENT or not producer.input:
                return None
            source = producer.input[0]
            if source in self.activations and self.activations[source].readers is None:
                return self.activations[source]
            producer = self.view.producers.get(source)
        return None

    def _tensor(self, name: str, *, output: bool) -> None:
        """A Q/DQ pair on `name`: on every reader for a layer's output, else on the quantized layers reading it."""
        config, target, stats = self.config, self.target, self.stats
        shared = None if output else self._grid_source(name)
        if shared is not None:
            self.activations[name] = shared.model_copy(update={"tensor": name, "readers": sorted(set(self.input_readers[name]))})
            return
        low, high = activation_range(
            stats.require(name), config.activation_range, target.activation_dtype, symmetric=config.symmetric_activations
        )
        previous = self.activations.get(name)
        readers = None if output or (previous is not None and previous.readers is None) else sorted(set(self.input_readers[name]))
        if readers is None and name not in self.graph_outputs:  # every reader sees the DQ: clamp to what they can use
            useful_low, useful_high = useful_range(self.users.get(name, []), name, self.view)
            low, high = max(low, useful_low), min(high, useful_high)
        scale, zero_point = activation_params(low, high, target.activation_dtype, symmetric=config.symmetric_activations)
        dtype = np.dtype(target.activation_dtype)
        if zero_point != 0 and self._zero_point_free(name):
            dtype = np.dtype(np.int8)
            low, high = activation_range(stats.require(name), config.activation_range, np.int8, symmetric=True)
            if readers is None and name not in self.graph_outputs:
                low, high = max(low, useful_low), min(high, useful_high)
            scale, zero_point = activation_params(low, high, np.int8, symmetric=True)
        level = two_levels(stats.tensors[name]) if target.int16_pairs and dtype == np.uint8 else None
        if level is not None and readers is not None:
            # Only 0 and `level` (a one-hot code): 0 and 127 hold both exactly, and 127 x 127 pair
            # sums stay within int16, where 255 would flag nearly every channel for 7-bit weights.
            scale, zero_point = np.float32(level / 127.0), 0
        self.activations[name] = ActivationQuant(tensor=name, scale=float(scale), zero_point=zero_point, dtype=dtype.name, readers=readers)

    def _zero_point_free(self, name: str) -> bool:
        """Whether a quantized layer reads `name` that the runtime runs on integers only from an
        input without a zero point (Target.zero_point_free_inputs)."""
        ops = self.target.zero_point_free_inputs
        return bool(ops) and any(self.layer_ops.get(reader) in ops for reader in self.input_readers.get(name, []))

    def _output(self, node: onnx.NodeProto, rule, act_inputs: list[str]) -> None:
        """The layer's output quantizer: after a fused activation, on the output, or none."""
        output = node.output[0]
        followers = self.users.get(output, [])
        if _fuses_activation(node, followers, self.graph_outputs, self.ignored, self.inits, self.config) and (
            _output_required(rule, self.target, followers[0].output[0], self.users) or self._feeds_quantized(followers[0].output[0])
        ):
            self.fused.append(FusedActivation(node=followers[0].name, into=node.name))
            self._tensor(followers[0].output[0], output=True)
        elif _output_required(rule, self.target, output, self.users) or self._feeds_quantized(output):
            self._tensor(output, output=True)
        else:
            fused_in_float = float_fused(node, rule, self.users, self.graph_outputs, self.rank(act_inputs[0]))
            # A Relu before a u8 quantizer at zero point 0 is dropped by ORT (the Q clamps), so
            # the layer meets that quantizer and no other is needed.
            absorbed = fused_in_float is not None and fused_in_float[1].op_type == "Relu" and (
                not self.config.symmetric_activations and self._feeds_quantized(fused_in_float[1].output[0])
            )
            if fused_in_float is not None and not absorbed:
                self._tensor(fused_in_float[0], output=True)

    def _weight(self, node: onnx.NodeProto, rule, act_inputs: list[str], weight_name: str) -> int | None:
        """The weight's entry (shared weights must agree on the axis); returns its channel axis."""
        config, target = self.config, self.target
        weight = self.inits[weight_name]
        axis = rule.channel_axis(node, len(weight.dims)) if config.per_channel and target.per_channel else None
        entry = self.weights.setdefault(
            weight_name, WeightQuant(
                initializer=weight_name, axis=axis, dtype=np.dtype(target.weight_dtype).name, estimator=config.weight_range
            )
        )
        if entry.axis != axis:
            raise ConfigError(f"weight {weight_name!r} is shared by nodes that need different channel axes")
        if target.int16_pairs:
            narrow = _overflowing(node, entry, self.activations[act_inputs[0]], self.stats.tensors.get(act_inputs[0]), self.quantized)
            if narrow:
                self.weights[weight_name] = entry.model_copy(update={"narrow": sorted(set(entry.narrow) | set(narrow))})
        return axis

    def _bias(self, node: onnx.NodeProto, rule, act_inputs: list[str], axis: int | None) -> None:
        """An int32 bias where the target takes one and the bias is a float vector over the output channels."""
        weight_name = node.input[rule.weight_input]
        weight = self.inits[weight_name]
        reader, bias_name = layer_bias(node, rule, self.users, self.graph_outputs, self.rank(act_inputs[0]))
        bias = self.inits.get(bias_name)
        if (
            self.target.bias_int32
            and bias is not None
            and bias.data_type == onnx.TensorProto.FLOAT
            and len(bias.dims) >= 1
            and all(d == 1 for d in bias.dims[:-1])  # [N], or [1, N] as jax2tf and tf2onnx write it
            and (axis is None or bias.dims[-1] == weight.dims[axis])
        ):
            self.biases.append(BiasQuant(
                node=node.name, initializer=bias_name, activation=act_inputs[0], weight=weight_name,
                reader=None if reader is node else reader.name,
            ))


def _integer_inputs(node: onnx.NodeProto) -> list[str]:
    wanted = READERS[node.op_type].integer_inputs
    indices = range(len(node.input)) if wanted == ALL_INPUTS else wanted
    return [node.input[i] for i in indices if i < len(node.input) and node.input[i]]


def _join_candidates(graph: onnx.GraphProto, ops: frozenset[str], ignored: set[str], inits, users, convs: list[onnx.NodeProto],
                     quantized: set[str], reads: set[str]) -> list[onnx.NodeProto]:
    """The Target.integer_joins nodes of two or more distinct computed inputs, each the output
    of one of `convs` (for a Concat also after its activation) or a tensor in `quantized`; a sum
    needs a conv's own output among them (the conv it is fused into). Only those whose output
    (or the output of the one activation after it) feeds `reads`: a join read in float only
    would gain nothing from integer inputs."""
    own = {node.output[0] for node in convs}
    activated = own | {after_activation(tensor, users) for tensor in own}
    found = []
    for node in graph.node:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx") or node.name in ignored or len(node.input) < 2:
            continue
        inputs = set(node.input)
        sum_into_conv = INTEGER_JOINS[node.op_type]
        if len(inputs) != len(node.input) or any(t in inits for t in inputs) or not inputs <= (own if sum_into_conv else activated) | quantized:
            continue
        if sum_into_conv and not inputs & own:
            continue
        if feeds_reads(after_activation(node.output[0], users), reads, users):
            found.append(node)
    return found


def _integer_joins(graph: onnx.GraphProto, placer: _Placer, chosen, ignored: set[str]) -> list[onnx.NodeProto]:
    """Pass 3b of `plan`: the joins the runtime runs on integers once every input comes through
    Q/DQ (Target.integer_joins): a residual Add it fuses into the integer Conv writing one input
    as a sum post-op, a Concat it joins as integers. Each input is a chosen Conv's output (a
    Concat's also after its activation) or a tensor already quantized. NNCF places these for
    OpenVINO; left reading a float conv output, the op runs on its own in float."""
    convs = [node for node, _, _ in chosen if node.op_type == "Conv"]
    return _join_candidates(graph, placer.target.integer_joins, ignored, placer.inits, placer.users, convs,
                            set(placer.activations), placer.quantized_reads)


def _integer_ops(graph: onnx.GraphProto, placer: _Placer, enabled: frozenset[str], float_inputs: frozenset[str],
                 ignored: set[str]) -> list[onnx.NodeProto]:
    """Pass 4 of `plan`: the weightless ops run on integers (QuantConfig.integer_op_rows), in
    graph order: those whose every input is already an integer output (quantized for every reader)
    or the output of another such op (or of a `float_inputs` op, which it quantizes for itself),
    and whose output feeds a quantized reader. Found as a
    fixpoint, so a chain of Adds and Concats between quantized layers stays integer throughout,
    and no quantizer is added that the layers did not need already."""
    settled = {tensor for tensor, entry in placer.activations.items() if entry.readers is None}
    return _integer_fixpoint(graph, enabled, float_inputs, ignored, settled, placer.quantized_reads, placer.users)


def _integer_fixpoint(graph: onnx.GraphProto, enabled: frozenset[str], float_inputs: frozenset[str], ignored: set[str],
                      settled: set[str], reads: set[str], users) -> list[onnx.NodeProto]:
    """The `enabled` ops, in graph order, whose every integer input is `settled` (an integer
    output), the output of a `float_inputs` op or of another such op, or one of those moved by
    value-moving ops (a Slice of it, a MaxPool: they take its grid, and ORT runs them on the
    integers), and whose output feeds `reads` (tensors quantized for a reader) directly or
    through another such op."""
    if not enabled:
        return []
    outputs = {o.name for o in graph.output}
    found = {
        node.name: node for node in graph.node
        if node.op_type in enabled and node.domain in ("", "ai.onnx") and node.name not in ignored
        and len(node.output) == 1 and node.output[0] not in outputs and _integer_inputs(node)
    }
    settled = settled | {n.output[0] for n in graph.node if n.op_type in float_inputs and len(n.output) == 1}
    moves = [node for node in graph.node if node.op_type in TRANSPARENT and node.input]
    while True:
        available = _moved(moves, settled | {node.output[0] for node in found.values()})
        wanted = reads | {t for node in found.values() for t in _integer_inputs(node)}
        dropped = [
            name for name, node in found.items()
            if not all(t in available for t in _integer_inputs(node))
            or not feeds_reads(node.output[0], wanted, users)
        ]
        if not dropped:
            return [node for node in graph.node if node.name in found]
        for name in dropped:
            del found[name]


def _moved(moves: list[onnx.NodeProto], tensors: set[str]) -> set[str]:
    """`tensors` and the outputs of the value-moving ops (in graph order) that read one of them."""
    tensors = set(tensors)
    for node in moves:
        if node.input[0] in tensors:
            tensors.update(out for out in node.output if out)
    return tensors


# ONNX Runtime's fused ops that hold a layer's weight, which lowprec leaves float: no QDQ around
# them becomes an integer kernel. Listed among the layers left in float, so that a report counts
# them (a BERT after ORT's transformer optimizer keeps a quarter of its MACs in Attention).
_FUSED_WEIGHTED = {
    "Attention": "ONNX Runtime's fused Attention holds its QKV projection, and no QDQ makes it an integer kernel: "
                 "quantize the model from before onnxruntime.transformers.optimizer",
}


def _choose(model, config: QuantConfig, ignored, inits, users, float_tensors, known_ranks, skipped: dict[str, str]):
    """The layers the plan quantizes, before it leaves float those ORT would fuse into a float
    kernel (which needs calibrated ranks), as [(node, activation inputs, weight)] in graph
    order; the others go into `skipped` with the reason. Reads the graph only, no statistics.
    With more layers ignored, the choice is a subset of this one."""
    graph = model.graph
    target = TARGETS[config.target]
    chosen: list[tuple[onnx.NodeProto, list[str], str]] = []  # node, activation inputs, weight
    short: list[tuple[onnx.NodeProto, list[str], str, str]] = []  # under the reduction floor, and why
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    for node in graph.node:
        rule = target.layers.get(node.op_type)
        if node.domain == RUNTIME_DOMAIN and node.op_type in _FUSED_WEIGHTED:
            skipped[node.name] = _FUSED_WEIGHTED[node.op_type]
        if rule is None or node.domain not in ("", "ai.onnx"):
            continue
        reason = _skip_reason(node, rule, config, target, ignored, inits, float_tensors)
        if reason and len(node.input) > rule.weight_input and node.input[rule.weight_input] in dequantized:
            reason = "already quantized: its weight comes out of a DequantizeLinear"  # an INT8 model given again
        if not reason and target.channels_last_convs and config.reduction_floor > 0 and node.op_type == "Conv":
            reason = channel_split(node, users, known_ranks)
        if reason:
            skipped[node.name] = reason
            continue
        act_inputs = [node.input[i] for i in rule.activation_inputs if i < len(node.input) and node.input[i]]
        floor = under_floor(node, rule, config, inits)
        if floor:
            short.append((node, act_inputs, node.input[rule.weight_input], floor))
        else:
            chosen.append((node, act_inputs, node.input[rule.weight_input]))
    # A short layer stays float to spare requantizations its kernel cannot repay; where its
    # inputs are quantized for other layers anyway, or where it links integer layers into a chain,
    # it is quantized after all (see placement.requantized_anyway and placement.integer_chains).
    # Fewer layers chosen (more ignored) quantize fewer tensors, so they can only keep more short
    # layers float.
    shared = {name for _, act_inputs, _ in chosen for name in act_inputs}
    static = not (short and target.short_layers_need_static_shapes and computes_shapes(graph))
    candidates = [(node, act_inputs, output_channels(node, target.layers[node.op_type], tuple(inits[weight].dims)))
                  for node, act_inputs, weight, _ in short]
    sizes = sample_sizes(model)
    chained = integer_chains(candidates, [(node, act_inputs) for node, act_inputs, _ in chosen], target, users, sizes, static)
    for node, act_inputs, weight, floor in short:
        if node.name in chained or requantized_anyway(act_inputs, shared):
            chosen.append((node, act_inputs, weight))
        else:
            skipped[node.name] = floor
    if target.lone_min_work and config.reduction_floor > 0:
        lengths = [(node, act_inputs, target.layers[node.op_type].reduction(node, tuple(inits[weight].dims))) for node, act_inputs, weight in chosen]
        # An embedding table's Gathers write quantized rows wherever its 8 bits keep enough of it (_tables).
        gathered = {node.output[0] for node in graph.node if node.op_type == "Gather" and node.input[0] in inits} if target.tables else set()
        lone = lone_layers(lengths, graph, users, sizes, target.lone_min_work, gathered)
        skipped.update(lone)
        chosen = [entry for entry in chosen if entry[0].name not in lone]
    order = {node.name: index for index, node in enumerate(graph.node)}
    chosen.sort(key=lambda entry: order[entry[0].name])
    return chosen


def smoothing_groups(graph: onnx.GraphProto, config: QuantConfig, ignored: set[str]) -> dict[str, list[onnx.NodeProto]]:
    """The MatMul/Gemm inputs SmoothQuant may smooth, each with the layers that read it: those
    whose weight is a 2-D float constant read by that layer alone (one input's scale goes
    into it). With more layers ignored, a subset."""
    target = TARGETS[config.target]
    inits, users = initializers(graph), consumers(graph)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.op_type not in target.ops or node.name in ignored:
            continue
        if node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transA"), 0):
            continue
        weight = inits.get(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2:
            continue
        if len(users.get(node.input[1], [])) != 1:
            continue  # a shared weight cannot take one input's scale
        groups.setdefault(node.input[0], []).append(node)
    return groups


# Ops an attention block may put between its Softmax and the MatMul that weighs the values.
_ATTENTION_PASS = frozenset({"Cast", "Dropout", "Identity", "Where", "Reshape", "Transpose", "Squeeze", "Unsqueeze"})


# LayerNormalization, and the ops ONNX Runtime's transformer optimizer fuses attention and layer
# norms into (onnxruntime.transformers.optimizer: a BERT's Softmax goes inside Attention).
_TRANSFORMER_OPS = frozenset({
    "LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization", "Attention", "MultiHeadAttention", "GroupQueryAttention",
})


def resolve_model_type(model: onnx.ModelProto, model_type: str) -> str:
    """`auto`: a graph with attention (a Softmax whose probabilities a MatMul reads, or a fused
    attention op) or a layer norm is a transformer. A Softmax that only turns a classifier's or a CTC
    reader's logits into probabilities is not attention: a CRNN + LSTM digit reader
    (bench `strips`) lost 1.5 points of exact match to SmoothQuant on its projection."""
    if model_type != "auto":
        return model_type
    graph = model.graph
    if any(node.op_type in _TRANSFORMER_OPS for node in graph.node):
        return "transformer"
    users = consumers(graph)
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        frontier, seen = list(node.output), set()
        while frontier:
            tensor = frontier.pop()
            for reader in users.get(tensor, []):
                if reader.op_type == "MatMul":
                    return "transformer"
                if reader.op_type in _ATTENTION_PASS and reader.output[0] not in seen:
                    seen.add(reader.output[0])
                    frontier.append(reader.output[0])
    return "cnn"


def _nested_layers(graph: onnx.GraphProto, owner: str = "") -> dict[str, str]:
    """Quantizable nodes inside Loop/Scan bodies, which plans leave float, with the reason.
    (If bodies are planned as models of their own: see quantize.default.)"""
    found = {}
    for node in graph.node:
        if owner and node.op_type in QUANTIZABLE:
            found[node.name or f"{owner}/{node.op_type}"] = f"inside the body of {owner!r}: lowprec quantizes the main graph and If bodies only"
        if node.op_type == "If" and not owner:
            continue
        for sub in subgraphs(node):
            found.update(_nested_layers(sub, owner or node.name))
    return found


def _overflowing(node, entry: WeightQuant, act: ActivationQuant, act_stats, quantized: QuantizedWeights) -> list[int]:
    """Output channels whose u8 x s8 pair sums can pass int16 for activations in their calibrated
    range. An s8 input (a zero-point-free grid) is oneDNN's signed-input case: without VNNI it
    shifts the input to u8 and halves the weights itself, so no pair sum passes int16."""
    if act.dtype != "uint8" or entry.dtype != "int8" or act_stats is None or act_stats.channel_min is None:
        return []
    q, _ = quantized(entry.model_copy(update={"narrow": []}))  # every channel at 8 bits
    high = np.clip(np.rint(act_stats.channel_max / np.float32(act.scale)) + act.zero_point, 0, 255)  # in u8 units
    flagged = overflow_channels(node, q, high)
    return [0] if flagged and entry.axis is None else flagged


def _skip_reason(node, rule, config, target, ignored, inits, float_tensors) -> str | None:
    if node.op_type not in target.ops:
        return f"target {config.target!r} has no integer {node.op_type}"
    if node.name in ignored:
        return "ignored scope"
    weight_name = node.input[rule.weight_input] if len(node.input) > rule.weight_input else ""
    act_inputs = [node.input[i] for i in rule.activation_inputs if i < len(node.input) and node.input[i]]
    if weight_name not in inits or inits[weight_name].data_type != onnx.TensorProto.FLOAT:
        if weight_name not in inits and any(name in inits for name in act_inputs):
            # A graph convolution's fixed adjacency times the features: A @ X.
            constant = list(node.input).index(next(name for name in act_inputs if name in inits))
            return (f"its constant is input {constant}, and input {rule.weight_input}, where lowprec quantizes a weight, "
                    "is computed: it stays float")
        return "weight is not a float32 constant"
    not_float = [name for name in act_inputs if name not in float_tensors]
    if not_float:
        return f"input {not_float[0]!r} is not float32"
    return None


def _output_required(rule, target, tensor: str, users) -> bool:
    """Whether a layer's output `tensor` is quantized whoever reads it: the layer's integer
    kernel writes integers (rule), or the target's runtime needs a quantizer before one of its
    readers (Target.quantized_output_readers)."""
    return rule.integer_output_required or any(reader.op_type in target.quantized_output_readers for reader in users.get(tensor, []))


def _fuses_activation(node, followers, graph_outputs, ignored, inits, config: QuantConfig) -> bool:
    """Whether `config` lets the output quantizer of `node` go after its one reader, a fusable
    activation (the integer kernel then applies it). A Conv always takes the fusion then; a
    MatMul or Gemm only where a quantized layer reads the activation."""
    return (
        config.fuse_activations
        and not config.symmetric_activations
        and len(followers) == 1
        and node.output[0] not in graph_outputs
        and followers[0].name not in ignored
        and absorbed_by_quantizer(followers[0], inits)
    )


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    values = list(graph.input) + list(graph.value_info) + list(graph.output)
    floats = {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    known = {v.name for v in values if v.type.tensor_type.elem_type}
    # Tensors shape inference could not type: assume float when a float op produced them.
    for node in graph.node:
        for out in node.output:
            if out and out not in known:
                floats.add(out)
    return floats
