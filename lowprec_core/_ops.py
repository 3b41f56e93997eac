"""What is quantizable: a row per layer op (QUANTIZABLE), per other op that reads a quantized
tensor (READERS), per hardware target (TARGETS). Adding an op means adding a row."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ._struct import Struct, factory


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


class OpRule(Struct, kw_only=True):
    """How one layer op type (an op with a weight) is quantized: a row of QUANTIZABLE."""

    channel_axis: Callable[[onnx.NodeProto, int], int | None]  # (node, weight rank) -> the weight axis of output channels, None: per tensor only
    input_channel_axis: int  # the axis of the activation input that the weight contracts over
    reduction: Callable[[onnx.NodeProto, tuple[int, ...]], int]  # (node, weight dims) -> products summed per output
    activation_inputs: tuple[int, ...] = (0,)  # input indices that carry activations (quantized per tensor)
    weight_input: int = 1  # the weight, quantized per channel when it is constant
    bias_input: int | None = None  # a bias that becomes int32 (scale = x_scale * w_scale)
    # The Add after the layer that ORT folds into it as its bias (MatMul on 2-D input -> Gemm).
    bias_from_following_add: bool = False
    integer_output_required: bool = False  # no integer kernel with a float output exists (Conv)
    # Activations that ORT fuses into this op's *float* kernel (Gemm -> FusedGemm) before its QDQ
    # fusions: an integer kernel needs a quantized output between the two.
    float_fused_activations: frozenset[str] = frozenset()


def _conv_reduction(node: onnx.NodeProto, dims: tuple[int, ...]) -> int:
    # Weight [C_out, C_in / group, k...]: each output sums C_in / group x k... products.
    return int(dims[1] * math.prod(dims[2:])) if len(dims) > 1 else 1


def _conv_transpose_reduction(node: onnx.NodeProto, dims: tuple[int, ...]) -> int:
    # Weight [C_in, C_out / group, k...]: each output sums at most C_in / group x k... products.
    return int(dims[0] // _attr(node, "group", 1) * math.prod(dims[2:])) if len(dims) > 1 else 1


def _conv_transpose_axis(node: onnx.NodeProto, rank: int) -> int | None:
    # Weight is [C_in, C_out/group, k...]: axis 1 holds whole output channels only when group == 1.
    return 1 if _attr(node, "group", 1) == 1 else None


QUANTIZABLE: dict[str, OpRule] = {
    "Conv": OpRule(channel_axis=lambda node, rank: 0, input_channel_axis=1, reduction=_conv_reduction,
                   bias_input=2, integer_output_required=True),
    "ConvTranspose": OpRule(channel_axis=_conv_transpose_axis, input_channel_axis=1, reduction=_conv_transpose_reduction,
                            bias_input=2, integer_output_required=True),
    "Gemm": OpRule(channel_axis=lambda node, rank: 0 if _attr(node, "transB", 0) else 1, input_channel_axis=-1,
                   reduction=lambda node, dims: int(dims[-1] if _attr(node, "transB", 0) else dims[0]), bias_input=2,
                   # onnxruntime's GemmActivationFusion, checked op by op with optimized_graph.
                   float_fused_activations=frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Elu", "Selu", "Softplus", "Softsign"})),
    # ORT's integer MatMul takes per-column scales for a 2-D B only.
    "MatMul": OpRule(channel_axis=lambda node, rank: rank - 1 if rank == 2 else None, input_channel_axis=-1,
                     reduction=lambda node, dims: int(dims[-2] if len(dims) > 1 else dims[0]), bias_from_following_add=True,
                     # After the Add that ORT folds into a Gemm with it (2-D input): of the
                     # activations ORT fuses into a Gemm, only Relu reaches that folded one.
                     float_fused_activations=frozenset({"Relu"})),
}


class Target(Struct):
    """A hardware target: which ops it runs in integer and with which types.

    symmetric_activations: None lets the preset decide; True/False is forced by the hardware.
    int16_pairs: the integer kernel adds adjacent u8 x s8 products in int16 (x86 AVX2 without
        VNNI: VPMADDUBSW), so a pair of large products saturates. Output channels that can
        overflow for activations inside their calibrated range get 7-bit weights.
    min_reduction: layers whose outputs sum fewer products than this stay float (depthwise
        and first convolutions, thin 1x1s): quantizing the input and requantizing the output
        costs more than a short integer dot product saves, and the float kernels fuse better.
    channels_last_convs: integer convolutions run channels-last (ORT's CPU QLinearConv), so a
        conv whose output is split into channel groups (ShuffleNet's channel shuffle) pays a
        full transpose each way; such convs stay float while min_reduction is above 0.
    """

    ops: frozenset[str]
    activation_dtype: type
    weight_dtype: type
    per_channel: bool
    bias_int32: bool
    symmetric_activations: bool | None
    int16_pairs: bool = False
    min_reduction: int = 0
    channels_last_convs: bool = False
    # Weightless ops (READERS rows with integer_inputs) run on integers where every input they
    # read is already a quantized output and their output feeds a quantized reader: tensors stay
    # INT8 from layer to layer, and no quantizer is added that the layers did not need already.
    integer_ops: frozenset[str] = frozenset()
    # Float ops whose (bounded) output such an integer op may quantize for itself: HardSigmoid and
    # Sigmoid, whose [0, 1] fits one grid, so x * HardSigmoid(x) runs as QLinearMul.
    integer_op_float_inputs: frozenset[str] = frozenset()
    # Readers before which a layer's output is quantized even where they run in float (a
    # runtime that miscomputes without it: see "openvino").
    quantized_output_readers: frozenset[str] = frozenset()
    # The runtime miscompiles such a short layer, quantized, where an input has a free size and
    # the graph computes a shape from an activation: there short layers stay float, whatever
    # their output (see placement.integer_chains).
    short_layers_need_static_shapes: bool = False
    # A short layer is quantized to spare the requantization of its larger output only with at
    # least this many output channels: the integer kernel's per-pixel work (gathering the short
    # window, requantizing the row) is shared over the channels, and with fewer it costs more
    # than the quantizer it spares (see placement.integer_chains).
    requantize_min_channels: int = 0
    # A lone layer (its inputs quantized for it alone, its output read only by float ops) stays
    # float where it computes fewer than this many products per sample, with the reduction floor
    # on: its QuantizeLinear and DequantizeLinear cost more than its integer kernel saves (see
    # placement.lone_layers). 0: no such rule.
    lone_min_work: int = 0
    # Joins (INTEGER_JOINS rows) the runtime runs on integers where every input comes through a
    # Q/DQ: such an op whose inputs are each a quantized Conv's output or a tensor quantized for a
    # layer reads them all through their quantizers (see planner._integer_joins).
    integer_joins: frozenset[str] = frozenset()
    # Layer ops the runtime runs on integers only from an input without a zero point: an input
    # of theirs whose asymmetric grid would need one takes a symmetric int8 grid instead.
    zero_point_free_inputs: frozenset[str] = frozenset()
    # Embedding tables (float constants that only Gathers read, TABLE_MIN_ELEMENTS or more) are
    # stored in 8 bits, on one uint8 grid with the same Q/DQ pair after each Gather: ORT drops
    # both and gathers bytes, OpenVINO gathers them compressed, and the rows gathered are
    # dequantized. MiniLM's word embeddings (30522 x 384) on Zen 4, 1 thread: the INT8 model
    # 58.8 -> 23.6 MB, peak RSS of a session 161 -> 111 MB in ORT and 193 -> 159 MB in OpenVINO,
    # speed level (1.01x ORT, 1.02x/1.08x OpenVINO), cosine to FP32 0.9979 -> 0.9977. A scale
    # per row gathers slower in ORT (its DequantizeLinear before the Gather stays and
    # dequantizes the whole table every call: 0.77x at batch 1) and costs OpenVINO memory (it
    # unpacks the table at compile: 211 MB).
    tables: bool = False
    # The runtime that runs the quantized model, and its layer rows (how it runs each layer op).
    runtime: str = "onnxruntime"
    layers: Mapping[str, OpRule] = factory(lambda: QUANTIZABLE)
    # The row whose layers a statistics file is collected for (None: this one), where this row
    # quantizes a subset of them: a file calibrated on one machine then serves either row.
    calibrates_for: str | None = None


# OpenVINO's CPU plugin reads each Q/DQ pair as a FakeQuantize and its low-precision
# transformations fuse a FakeQuantize after a layer (and the activation between) into that
# layer's kernel as a post-op: a layer writes integers where the next one reads them and float
# elsewhere, so none needs an output quantizer of its own, and there are no ORT float fusions
# (Gemm + activation) to keep clear of. Its integer MatMul takes per-column weight scales at any rank.
OPENVINO_LAYERS: dict[str, OpRule] = {
    op: rule.replace(integer_output_required=False, float_fused_activations=frozenset(), bias_from_following_add=False)
    for op, rule in QUANTIZABLE.items()
}
OPENVINO_LAYERS["MatMul"] = OPENVINO_LAYERS["MatMul"].replace(channel_axis=lambda node, rank: rank - 1 if rank >= 2 else None)


# The weightless ops each runtime runs on integers (READERS rows with integer_inputs), and the
# bounded float gates such an op may quantize for itself: the rows QuantConfig.integer_ops "all"
# turns on, and that the latency search tries. ORT's CPU provider has QLinearAdd, QLinearMul,
# QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu
# and a uint8 Resize. OpenVINO's plugin moves quantization through such ops itself (its
# low-precision transformations): nothing is placed for it.
RUNTIME_INTEGER_OPS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "onnxruntime": (frozenset({"Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Sigmoid", "LeakyRelu", "Resize"}),
                    frozenset({"HardSigmoid", "Sigmoid"})),
    "openvino": (frozenset(), frozenset()),
}


# Ops that join tensors, which OpenVINO's plugin runs on integers once every input comes through
# a Q/DQ (Target.integer_joins): op -> whether one input must be a Conv's own output. A sum is
# fused into the integer Conv writing that input, as a post-op reading the other in integers; a
# Concat joins integers, whichever layer or activation wrote them.
INTEGER_JOINS: dict[str, bool] = {"Add": True, "Sum": True, "Concat": False}


TARGETS: dict[str, Target] = {
    # ONNX Runtime's CPU provider on any x86-64: u8 activations x s8 weights, per-channel,
    # int32 bias; safe on AVX2-only CPUs, where ORT's u8s8 kernels sum product pairs in int16.
    # No ConvTranspose: ORT's CPU provider has no integer kernel for it, so Q/DQ would only add error.
    # min_reduction 64: measured with bench/reduction.py (PP-OCRv4 det, rec and cls, digits):
    # faster and closer to FP32 than quantizing every layer, on every model.
    # requantize_min_channels 32: ORT 1.31 on Zen 4 (AVX512-VNNI), 1 thread, a first conv of 1
    # channel into 8 or 16 on 8x8 digits quantized to spare the Q on its output ran a CNN at
    # 0.79x / 0.79x and 0.95x / 1.45x of FP32 at batch 1 / 64, kept float 0.90x / 1.25x and
    # 1.05x / 1.94x; with 32 channels (digits, the CRNN `strips`: 1.29x against 0.92x float) and
    # 64 (SqueezeNet's 3 -> 64: 2.29x against 1.42x) quantizing pays. Unmeasured on AVX2.
    # integer_ops Add: a residual sum whose inputs are both integer layer outputs and whose output
    # a quantized layer reads runs as QLinearAdd, where float it sat between two DQs and a Q: a
    # MobileNetV2 trained on digits (ORT 1.31, Zen 4, 1 thread) 1.19x / 2.06x of FP32 at batch
    # 1 / 32 -> 1.30x / 2.12x, top-1 unchanged (ORT per-tensor 1.23x / 1.77x). No other bench or
    # light model has such a sum (ResNet's feed a Relu first): their bytes are unchanged.
    # lone_min_work 65536: squeeze-excite convs (a pooled value per channel in, a float gate
    # out) and classifiers over pooled tensors compute 384-14400 products a sample; each paid a
    # QuantizeLinear and a DequantizeLinear of its own. Float, on Zen 4 (AVX512-VNNI), ORT 1.31,
    # 1 thread: the digit EfficientNet 1.01x -> 1.07x of FP32 at batch 1 (1.09x -> 1.10x at 32),
    # PP-OCR cls 1.44x / 1.49x -> 1.46x / 1.51x, det, rec and the MobileNetV2 within 0.5 %; top-1
    # and IoU unchanged, rec's agreement with FP32 0.92 -> 0.935 (its exact match 0.885 -> 0.86,
    # FP32 0.83). Their float weights cost size: cls 0.75 -> 0.84 of FP32's bytes. The other
    # layers of the bench's models compute 221184 or more, or read unpooled tensors. Not on the
    # OpenVINO rows: the same layers float there ran the EfficientNet at 1.19x against 1.22x of
    # FP32 (batch 1; level at 32), cls and the MobileNetV2 within 1 %.
    "cpu": Target(frozenset({"Conv", "Gemm", "MatMul"}), np.uint8, np.int8, True, True, None, int16_pairs=True, min_reduction=64,
                  channels_last_convs=True, tables=True, requantize_min_channels=32, integer_ops=frozenset({"Add"}), lone_min_work=65536),
    # The same on CPUs with AVX512-VNNI / AVX-VNNI / AMX (int32 accumulation): full 8-bit weights everywhere.
    # min_reduction as on "cpu" until measured on VNNI hardware (its integer dot products are cheaper).
    "cpu-vnni": Target(frozenset({"Conv", "Gemm", "MatMul"}), np.uint8, np.int8, True, True, None, min_reduction=64,
                       channels_last_convs=True, tables=True, requantize_min_channels=32, integer_ops=frozenset({"Add"}), lone_min_work=65536),
    # TensorRT-style: s8 symmetric everywhere, per-channel weights.
    "gpu": Target(frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"}), np.int8, np.int8, True, True, True),
    # Conservative accelerators: per-tensor weights, u8 asymmetric activations.
    "npu": Target(frozenset({"Conv", "Gemm", "MatMul"}), np.uint8, np.int8, False, True, False),
    # OpenVINO's CPU plugin (see OPENVINO_LAYERS): u8/s8 per-channel, the bias left float (the
    # plugin adds it in the kernel), int16 pair sums guarded as on "cpu" (oneDNN's u8s8 kernels
    # without VNNI use the same VPMADDUBSW). min_reduction 64, measured with OpenVINO 2026.4 on
    # AMD Zen 4 (AVX512-VNNI, AVX512_BF16, where float layers run in bf16): against 0, PP-LCNet
    # cls 0.85x -> 1.09x of FP32 at batch 1 (its depthwise convs are faster in bf16 than in
    # int8), PP-OCRv4 det IoU 0.981 -> 0.989 at the same speed, the others within noise
    # (bench/results/openvino_target-*.md). Activations stay asymmetric (`mixed`): symmetric
    # costs det a quarter of its speedup (2.66x -> 1.99x).
    "openvino": Target(frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"}), np.uint8, np.int8, True, False, None,
                       int16_pairs=True, min_reduction=64, runtime="openvino", layers=OPENVINO_LAYERS, tables=True,
                       # A short first conv whose larger output feeds quantized layers is quantized
                       # too, as on `cpu`: the plugin's int8 kernel for it beats its bf16 one. On Zen
                       # 4, 1 thread: onnx's light SqueezeNet (3 -> 64) 2.67x -> 2.81x of FP32 (NNCF
                       # 2.84x), digits (1 -> 32) level (1.17x / 2.79x -> 1.17x / 2.84x, top-1 0.99).
                       # Not where an input has a free size and the graph computes a shape from an
                       # activation: OpenVINO 2026.4 then shifts the quantized conv's output by a
                       # per-channel offset (the CRNN `strips`, whose LSTM state is sized from Shape:
                       # exact match 0.9225 -> 0.85; right with the batch fixed, and in ORT).
                       requantize_min_channels=32, short_layers_need_static_shapes=True,
                       # OpenVINO 2026.4 runs a ConvTranspose whose input has a zero point in
                       # float (bf16 behind a Subtract, with reorders around it). The U-Net
                       # `columns` (GELU outputs into both: zero points 4 and 1) on Zen 4, 1 thread:
                       # 0.87x -> 1.43x of FP32 at batch 1 and 0.83x -> 2.13x at 32 with the
                       # plugin's bf16, exact match 0.8525 either way (FP32 0.85). PP-OCRv4 det's
                       # read ReLU outputs (zero point 0 already): unchanged.
                       zero_point_free_inputs=frozenset({"ConvTranspose"}),
                       # OpenVINO 2026.4 moves an integer conv's dequantization across the
                       # GlobalAveragePool of a squeeze-excite block and, where the conv's output
                       # has float readers besides, applies it twice (the pooled value comes out
                       # ~1000x too small): PP-OCRv4 det IoU 0.92 with one such conv quantized,
                       # 0.997 with its output quantized. A quantizer before the pool avoids it.
                       quantized_output_readers=frozenset({"GlobalAveragePool"}),
                       # A residual Add that reads a conv's float output runs on its own, in bf16 where
                       # float layers do; with both inputs through Q/DQ (NNCF's placement) the plugin
                       # fuses it into that conv. onnx's light ResNet-50 on Zen 4, 1 thread, batch 1:
                       # 3.46x -> 3.62x of FP32 at f32 (NNCF's OpenVINO flow 3.69x), its 16 bf16 sums
                       # 1.4 ms -> 0 of ~21; a ResNet-18-style net trained on digits: 2.90x / 3.57x ->
                       # 3.07x / 3.80x at batch 1 / 32, agreement with FP32 0.9975 -> 1.0. Likewise a
                       # Concat of conv branches: light Inception-v2 2.97x -> 3.09x (NNCF 3.09x). Only
                       # where the join feeds quantized layers: PP-LCNet cls's sums feed float convs,
                       # and with their inputs quantized it ran 1.14x -> 1.10x. No bench model's
                       # placement changes.
                       integer_joins=frozenset({"Add", "Sum", "Concat"})),
}
# OpenVINO on a CPU without int32-accumulating int8 dot products (AVX2 only): its integer
# MatMul/Gemm (FullyConnected) runs slower than f32 there, while its integer convs pay.
# Measured with OpenVINO 2026.4 on AMD Zen 3 (AVX2), 1 thread, the `openvino` row with MatMul and
# Gemm left float against as is: MiniLM 0.85x -> 1.01x of FP32 (every MatMul took 1.2 ms in
# int8 against 0.96 ms in f32), PP-OCR cls 0.95x -> 0.99x, rec 1.38x -> 1.45x, Magika
# 2.26x -> 2.35x, det and digits level (bench/results/openvino_target-amd-epyc-zen3-avx2.md).
# On Zen 4 (AVX512-VNNI) the same int8 MatMuls run MiniLM at 2.4x.
TARGETS["openvino-avx2"] = TARGETS["openvino"].replace(ops=frozenset({"Conv", "ConvTranspose"}), calibrates_for="openvino")

# An embedding table smaller than this (1 MiB in float32: MiniLM's 512 positions x 384) stays
# float: 8 bits would save little, and every row it holds is read on every call.
TABLE_MIN_ELEMENTS = 1 << 18
# A table whose one grid keeps less of it than this stays float: MiniLM's word embeddings keep
# 27.4 dB (cosine to FP32 0.9979 -> 0.9977 in 8 bits); its position embeddings, whose scale a
# few outlying values set, keep 15.2 dB, and in 8 bits as well cost 0.9977 -> 0.9972 for 0.6 MB.
TABLE_MIN_SQNR_DB = 20.0

# CPU flags of int8 dot products that accumulate in int32 (no int16 pair saturation, and
# integer kernels that pay off where AVX2's do not).
INT32_DOT_PRODUCTS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Each runtime's default row by the CPU's flags: the first whose flags the CPU has any of
# (an empty set: any CPU). ONNX Runtime keeps `cpu` on every ISA: on AVX2 (Zen 3) and
# AVX512-VNNI (Zen 4) the latency search kept it on every bench model, and its guard against
# int16 pair saturation keeps the model correct on whichever CPU serves it.
DEFAULT_ROWS: dict[str, tuple[tuple[frozenset[str], str], ...]] = {
    "onnxruntime": ((frozenset(), "cpu"),),
    "openvino": ((INT32_DOT_PRODUCTS, "openvino"), (frozenset(), "openvino-avx2")),
}


def integer_range(dtype: type) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


# (reader node, the tensor it reads, the graph) -> the range of that tensor the reader can tell apart.
Saturation = Callable[[onnx.NodeProto, str, "GraphView"], tuple[float, float]]
_FULL = (-math.inf, math.inf)


class GraphView(Struct):
    constants: dict[str, np.ndarray]
    producers: dict[str, onnx.NodeProto]


def _float_attr(node: onnx.NodeProto, name: str, default: float) -> float:
    return next((a.f for a in node.attribute if a.name == name), default)


def _clip_range(node: onnx.NodeProto, tensor: str, view: GraphView) -> tuple[float, float]:
    if node.input[0] != tensor:
        return _FULL
    bounds = []
    for index, default in ((1, -math.inf), (2, math.inf)):
        name = node.input[index] if len(node.input) > index else ""
        if not name:
            bounds.append(default)
        elif name in view.constants and view.constants[name].size == 1:
            bounds.append(float(view.constants[name].reshape(-1)[0]))
        else:
            return _FULL
    return bounds[0], bounds[1]


def _hardsigmoid_range(node: onnx.NodeProto, tensor: str, view: GraphView) -> tuple[float, float]:
    alpha, beta = _float_attr(node, "alpha", 0.2), _float_attr(node, "beta", 0.5)
    if alpha <= 0:
        return _FULL
    return -beta / alpha, (1.0 - beta) / alpha


def _gated_mul_range(node: onnx.NodeProto, tensor: str, view: GraphView) -> tuple[float, float]:
    """x * HardSigmoid(x) (HardSwish): the product is exactly 0 wherever the gate is 0."""
    if len(node.input) != 2 or list(node.input).count(tensor) != 1:
        return _FULL
    other = node.input[1] if node.input[0] == tensor else node.input[0]
    gate = view.producers.get(other)
    if gate is None or gate.op_type != "HardSigmoid" or gate.input[0] != tensor:
        return _FULL
    return _hardsigmoid_range(gate, tensor, view)[0], math.inf


def _clip_absorbed(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A Clip whose bounds are constants with lower bound <= 0 (so 0 is in range)."""
    lower = node.input[1] if len(node.input) > 1 else ""
    if lower and lower not in inits:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False
    return not lower or float(numpy_helper.to_array(inits[lower])) <= 0.0


class ReaderRule(Struct, kw_only=True):
    """How an op that is no layer treats a quantized tensor it reads: a row of READERS.

    integer_inputs / keeps_grid: see below; the target's `integer_ops` says which rows it uses.
    transparent: the op only moves or selects values; a quantized tensor passes through it
        unchanged, ORT moves Q/DQ pairs across it, and a quantized reader behind it counts as
        a quantized reader.
    absorbed: (node, initializers) -> whether a following QuantizeLinear can absorb this
        activation: with uint8 and the zero point at the bottom of the range, saturation *is*
        the activation, so the integer kernel before it applies it and the node goes.
    saturation: the range of one input outside which the op's output no longer changes (ReLU
        ignores everything below 0). A tensor read only by such ops is quantized over the
        union of its readers' ranges and loses nothing: finer steps where values matter.
    """

    transparent: bool = False
    absorbed: Callable[[onnx.NodeProto, dict[str, onnx.TensorProto]], bool] | None = None
    saturation: Saturation | None = None
    # The inputs an integer kernel of the runtime reads (ORT's QLinearAdd, QLinearConcat, ...)
    # when they and the output are quantized; ALL_INPUTS: every one. None: no integer kernel.
    integer_inputs: tuple[int, ...] | None = None
    # The integer kernel keeps its input's grid (ORT drops the DQ/Q pair around Resize when both
    # share scale and zero point): the output takes the input's quantizer, not one of its own.
    keeps_grid: bool = False


ALL_INPUTS = (-1,)
_MOVES = ReaderRule(transparent=True)
READERS: dict[str, ReaderRule] = {
    "Relu": ReaderRule(absorbed=lambda node, inits: True, saturation=lambda node, tensor, view: (0.0, math.inf)),
    "Clip": ReaderRule(absorbed=_clip_absorbed, saturation=_clip_range),
    "HardSigmoid": ReaderRule(saturation=_hardsigmoid_range),
    "HardSwish": ReaderRule(saturation=lambda node, tensor, view: (-3.0, math.inf)),
    "Mul": ReaderRule(saturation=_gated_mul_range, integer_inputs=(0, 1)),
    "Add": ReaderRule(integer_inputs=(0, 1)),
    "Concat": ReaderRule(integer_inputs=ALL_INPUTS),
    "GlobalAveragePool": ReaderRule(integer_inputs=(0,)),
    "AveragePool": ReaderRule(integer_inputs=(0,)),
    "Sigmoid": ReaderRule(integer_inputs=(0,)),
    "LeakyRelu": ReaderRule(integer_inputs=(0,)),
    "Resize": ReaderRule(integer_inputs=(0,), keeps_grid=True),
    **dict.fromkeys(("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Identity", "Slice", "Split", "Gather"), _MOVES),
    # Dropout is the identity at inference (ORT removes it): opset <= 11 exports keep it between
    # a classifier's Gemm + Relu and the next Gemm (the zoo's AlexNet, VGG, ZFNet).
    "Dropout": _MOVES,
}
FUSABLE_ACTIVATIONS: frozenset[str] = frozenset(op for op, rule in READERS.items() if rule.absorbed is not None)
TRANSPARENT: frozenset[str] = frozenset(op for op, rule in READERS.items() if rule.transparent)


def absorbed_by_quantizer(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """Whether a QuantizeLinear after `node` can stand in for it (see ReaderRule.absorbed)."""
    rule = READERS.get(node.op_type)
    return rule is not None and rule.absorbed is not None and rule.absorbed(node, inits)


def useful_range(readers: list[onnx.NodeProto], tensor: str, view: GraphView) -> tuple[float, float]:
    """The range of `tensor` that any of its readers can tell apart; (-inf, inf) if unknown."""
    if not readers:
        return _FULL
    lows, highs = [], []
    for node in readers:
        rule = READERS.get(node.op_type)
        low, high = rule.saturation(node, tensor, view) if rule is not None and rule.saturation is not None else _FULL
        lows.append(low)
        highs.append(high)
    return min(lows), max(highs)
