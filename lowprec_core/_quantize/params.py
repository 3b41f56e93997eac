"""Range -> scale / zero point, and weight arrays -> integer arrays. All arithmetic in float32
where ONNX Runtime does it, so an int32 bias matches the scale ORT expects exactly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .._ops import integer_range
from .ranges import weight_clip


def activation_params(minimum: float, maximum: float, dtype: type, *, symmetric: bool) -> tuple[np.float32, int]:
    """Scale and zero point for one activation tensor. The range always includes 0."""
    lo, hi = integer_range(dtype)
    rmin, rmax = min(float(minimum), 0.0), max(float(maximum), 0.0)
    if symmetric:
        absmax = max(-rmin, rmax)
        scale = np.float32(2.0 * absmax / (hi - lo)) if absmax > 0 else np.float32(1.0)
        zero_point = (lo + hi + 1) // 2 if lo == 0 else 0
        return scale, int(zero_point)
    if rmax == rmin:
        return np.float32(1.0), max(lo, 0)
    scale = np.float32((rmax - rmin) / (hi - lo))
    zero_point = int(np.clip(np.rint(lo - rmin / float(scale)), lo, hi))
    return scale, zero_point


def quantize_weight(
    weight: np.ndarray,
    axis: int | None,
    dtype: type,
    clip: np.ndarray | None = None,
    narrow: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric, restricted range ([-127, 127] for int8): returns (q, scale).

    `clip` replaces the per-channel |w| maximum (a range estimator's choice); channels in
    `narrow` use half the range ([-63, 63]), one bit less."""
    _, full = integer_range(dtype)
    hi = np.float32(full)
    if len(narrow):
        hi = np.full(1 if axis is None else weight.shape[axis], full, dtype=np.float32)
        hi[list(narrow)] = full // 2
    w = weight.astype(np.float32)
    if clip is not None:
        absmax = np.asarray(clip, dtype=np.float32).reshape(() if axis is None else -1)
    elif axis is None:
        absmax = np.array(np.abs(w).max(), dtype=np.float32)
    else:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        absmax = np.abs(w).max(axis=reduce).astype(np.float32)
    if axis is None:
        hi = np.float32(np.min(hi))
    scale = np.where(absmax > 0, absmax / hi, np.float32(1.0)).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    bound = np.reshape(hi, shape) if np.ndim(hi) else hi
    q = np.clip(np.rint(w / scale.reshape(shape)), -bound, bound).astype(dtype)
    return q, scale


def quantize_planned_weight(
    weight: np.ndarray, axis: int | None, dtype: type, estimator: str, narrow: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """A weight exactly as the transformer writes it: the estimator's clip, then quantize_weight."""
    clip = weight_clip(weight, axis, estimator, levels=2 * integer_range(dtype)[1] + 1)
    return quantize_weight(weight, axis, dtype, clip, narrow)


class QuantizedWeights:
    """The planned weights (WeightQuant entries) as the transformer writes them, each computed
    once from `inits` (one model's float initializers) and kept: the planner's overflow check,
    bias correction and the transform read the same values, and a search that plans a model many
    times quantizes each weight once. `source`: the same for the model before float edits, which
    keeps what every initializer outside `edited` gives (an embedding table, which no float edit
    touches, quantizes once for every SmoothQuant variant of a transformer)."""

    def __init__(self, inits: Mapping[str, onnx.TensorProto], *, source: "QuantizedWeights | None" = None,
                 edited: frozenset[str] = frozenset()) -> None:
        self.inits = inits
        self.source, self.edited = source, edited
        self._values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._kept: dict[str, float] = {}

    def __call__(self, entry) -> tuple[np.ndarray, np.ndarray]:
        if self.source is not None and entry.initializer not in self.edited:
            return self.source(entry)
        key = entry.model_dump_json()
        if key not in self._values:
            weight = numpy_helper.to_array(self.inits[entry.initializer])
            self._values[key] = quantize_planned_weight(weight, entry.axis, np.dtype(entry.dtype).type, entry.estimator, entry.narrow)
        return self._values[key]

    def kept_db(self, entry) -> float:
        """How much of the weight its quantized form keeps: signal over rounding noise, in dB
        (summed in float64 a block of rows at a time: a table can be hundreds of MB)."""
        if self.source is not None and entry.initializer not in self.edited:
            return self.source.kept_db(entry)
        key = entry.model_dump_json()
        if key not in self._kept:
            value = numpy_helper.to_array(self.inits[entry.initializer])
            q, scale = self(entry)
            scale = np.asarray(scale, dtype=np.float64)
            shape = [1] * value.ndim
            if entry.axis is not None:
                shape[entry.axis] = -1
            signal = noise = 0.0
            for start in range(0, len(value), 4096):
                block = value[start:start + 4096].astype(np.float64)
                rows = scale.reshape(shape) if entry.axis != 0 else scale[start:start + 4096].reshape(shape)
                signal += float(np.square(block).sum())
                noise += float(np.square(block - q[start:start + 4096] * rows).sum())
            self._kept[key] = 10 * float(np.log10(signal / noise)) if noise > 0 else float("inf")
        return self._kept[key]

    def planned(self, entries: Iterable) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{initializer: (q, scale)} for a plan's weights."""
        return {entry.initializer: self(entry) for entry in entries}


def quantize_bias(bias: np.ndarray, input_scale: np.float32, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias at scale input_scale * weight_scale (per output channel)."""
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    limit = np.iinfo(np.int32)
    q = np.clip(np.rint(bias.astype(np.float64) / safe.astype(np.float64)), limit.min, limit.max).astype(np.int32)
    return q, scale
