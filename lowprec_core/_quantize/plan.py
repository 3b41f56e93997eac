"""The plan's schema: everything the transformer does to a model, as data (JSON in every report).

`planner.plan` fills it and edits nothing; `transform.apply` carries it out on a copy.
"""

from __future__ import annotations

from .._config import QuantConfig
from .._records import Record


class ActivationQuant(Record):
    """A Q/DQ pair on one tensor. `readers` lists the nodes that read the DQ output; None means
    every reader (the tensor is the integer output of a quantized node: no float copy exists
    once ORT fuses it). Other readers keep the float value."""

    tensor: str
    scale: float
    zero_point: int
    dtype: str
    readers: list[str] | None = None


class WeightQuant(Record):
    """`narrow`: output channels given 7-bit weights so int16 pair sums cannot saturate."""

    initializer: str
    axis: int | None
    dtype: str
    estimator: str = "minmax"
    narrow: list[int] = []


class TableQuant(Record):
    """An embedding table in 8 bits, weight only: one uint8 grid, symmetric about zero point
    128 ([-127, 127] x scale, the scale from its largest |value|), behind a DequantizeLinear
    that the Gathers in `readers` read, each followed by a Q/DQ pair on that same grid (exact:
    the values gathered lie on it). The runtime gathers the bytes and dequantizes the rows
    gathered (Target.tables)."""

    initializer: str
    readers: list[str]

    def weight(self) -> WeightQuant:
        """The table's quantization as a weight's (int8, one scale; shifted to uint8 when applied)."""
        return WeightQuant(initializer=self.initializer, axis=None, dtype="int8")


class BiasQuant(Record):
    """`reader`: the node that adds the bias, where it is not `node` itself (the Add after a
    MatMul on 2-D input, which ORT folds into a Gemm before its QDQ fusions)."""

    node: str
    initializer: str
    activation: str
    weight: str
    reader: str | None = None


class FloatEdit(Record):
    """New values for a float initializer, made by an algorithm that keeps the float function
    (channel alignment, SmoothQuant) or corrects the quantized one (bias correction):
    v = ((v + add) / divide) * multiply, in float64, then float32. Each vector runs along
    `axis` of the initializer; with `axis` None it holds one value per element, in order.
    Edits apply in plan order, each to the value the one before it left."""

    initializer: str
    by: str  # the algorithm: "alignment", "smooth_quant", "bias_correction", "full_bias_correction"
    axis: int | None = None
    add: list[float] | None = None
    divide: list[float] | None = None
    multiply: list[float] | None = None


class InsertedScale(Record):
    """SmoothQuant's per-channel Mul: `output` = `tensor` * `initializer` (values `factors`,
    float32 along the last axis), read by `readers` in place of `tensor`."""

    tensor: str
    readers: list[str]
    factors: list[float]
    initializer: str
    output: str
    node: str


class FusedActivation(Record):
    node: str
    into: str


class QuantPlan(Record):
    """Everything the transformer does, as data: applied to the prepared model it names, it
    gives the INT8 model, byte for byte."""

    model_sha256: str
    config: QuantConfig
    activations: list[ActivationQuant] = []
    weights: list[WeightQuant] = []
    tables: list[TableQuant] = []
    biases: list[BiasQuant] = []
    fused: list[FusedActivation] = []
    nodes: list[str] = []
    skipped: dict[str, str] = {}
    ignored: list[str] = []  # the config's ignored scope, resolved once to node names
    integer_ops: list[str] = []  # weightless ops (Add, Concat, ...) whose inputs and output are quantized: run on integers
    corrected_biases: list[str] = []
    smoothed: list[str] = []
    aligned: list[str] = []
    # The float edits, in the order they apply (before any quantizer), and SmoothQuant's Muls.
    edits: list[FloatEdit] = []
    inserted: list[InsertedScale] = []
    # The plans of If bodies, each quantized as a model of its own, by "<If node>/<then_branch|else_branch>".
    bodies: dict[str, QuantPlan] = {}

    def layers(self) -> list[str]:
        """Every quantized layer, those inside If bodies included."""
        return [*self.nodes, *(name for body in self.bodies.values() for name in body.layers())]

    def stored_weights(self) -> list[WeightQuant]:
        """The weights the transform writes as integers: the layers' and the tables' (TableQuant.weight)."""
        return [*self.weights, *(table.weight() for table in self.tables)]

    def all_tables(self) -> list[TableQuant]:
        """Every embedding table in 8 bits, those inside If bodies included."""
        return [*self.tables, *(table for body in self.bodies.values() for table in body.all_tables())]

    def left_float(self) -> dict[str, str]:
        """Every layer left in float and why, those inside If bodies included."""
        found = dict(self.skipped)
        for body in self.bodies.values():
            found.update(body.left_float())
        return found
