"""Which output channels can overflow a kernel that sums u8 x s8 product pairs in int16.

x86 CPUs without VNNI multiply u8 activations by s8 weights with VPMADDUBSW, which adds each
pair of adjacent products (adjacent along the contraction axis K) into a saturating int16.
255 * 127 * 2 = 64770 does not fit in 32767, so two large products silently clip, and the
integer model drifts from the QDQ model it was planned as (MiniLM: cosine 0.9982 simulated,
0.9962 in ORT's kernels). For each output channel we bound every pair's sum over the
calibrated per-channel activation range; a channel that can overflow is given 7-bit weights
(|q| <= 63, so 255 * 63 * 2 fits) and keeps 8 bits otherwise.
"""

from __future__ import annotations

import numpy as np
import onnx

INT16_MAX = 32767


def overflow_channels(node: onnx.NodeProto, q: np.ndarray, act_low: np.ndarray, act_high: np.ndarray) -> list[int]:
    """Output channels of `node` whose int16 pair sums can saturate.

    q: the integer weight as the transformer writes it; act_low/act_high: the calibrated
    per-input-channel range of the activation in u8 units. [] where the layout is unknown."""
    flagged = None
    for weights, channel in _contraction_layouts(node, q, act_low.size):
        weights = weights.astype(np.int64)
        low, high = act_low[channel].astype(np.int64), act_high[channel].astype(np.int64)
        most = np.maximum(np.maximum(low * weights, high * weights), 0)
        least = np.minimum(np.minimum(low * weights, high * weights), 0)
        k = weights.shape[0] - weights.shape[0] % 2  # an odd last entry is paired with padding
        pair_high = (most[0:k:2] + most[1:k:2]).max(axis=0, initial=0)
        pair_low = (least[0:k:2] + least[1:k:2]).min(axis=0, initial=0)
        hit = (pair_high > INT16_MAX) | (pair_low < -INT16_MAX - 1)
        flagged = hit if flagged is None else flagged | hit
    return [] if flagged is None else [int(i) for i in np.flatnonzero(flagged)]


def _contraction_layouts(node: onnx.NodeProto, q: np.ndarray, channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights [K, N], input channel of each entry [K, N] or [K, 1]) for each order in which
    the kernel may walk K: one for MatMul/Gemm, NCHW and NHWC im2col for Conv."""
    if node.op_type in ("MatMul", "Gemm") and q.ndim == 2:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0) if node.op_type == "Gemm" else 0
        weights = q.T if trans_b else q
        if weights.shape[0] != channels:
            return []
        return [(weights, np.arange(channels)[:, None])]
    if node.op_type == "Conv" and q.ndim >= 3:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_ch, per_group = q.shape[:2]
        if per_group * group != channels or out_ch % group:
            return []
        taps = int(np.prod(q.shape[2:]))
        base = (np.arange(out_ch) // (out_ch // group)) * per_group  # first input channel of each output's group
        channel = base[None, :] + np.arange(per_group)[:, None]  # [C/g, N]
        nchw = q.reshape(out_ch, per_group * taps).T  # K = (c, kh, kw)
        nhwc = np.moveaxis(q.reshape(out_ch, per_group, taps), 1, 2).reshape(out_ch, -1).T  # K = (kh, kw, c)
        return [(nchw, np.repeat(channel, taps, axis=0)), (nhwc, np.tile(channel, (taps, 1)))]
    return []
