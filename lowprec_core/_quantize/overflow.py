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


def overflow_channels(node: onnx.NodeProto, q: np.ndarray, act_high: np.ndarray) -> list[int]:
    """Output channels of `node` whose int16 pair sums can saturate.

    q: the integer weight as the transformer writes it; act_high: the calibrated top of each
    input channel's activation range in u8 units. [] where the layout is unknown.

    A u8 x s8 product always fits in int16 (255 * 128 = 32640), so a pair can only overflow
    when both products share a sign, and then the sum is largest in magnitude at the top of
    the activation range (u8 >= 0): the signed sums there decide for every activation."""
    walks = _contraction_walks(node, q, act_high.size)
    if not walks:
        return []
    weights, channel, orders = walks
    products = act_high.astype(np.int32)[channel] * weights.astype(np.int32)
    flagged = np.zeros(weights.shape[0], dtype=bool)
    for order in orders:  # each: [N, K] with K in the order the kernel walks it
        walked = order(products)
        k = walked.shape[1] - walked.shape[1] % 2  # an odd last entry is paired with padding
        pairs = walked[:, 0:k:2] + walked[:, 1:k:2]
        flagged |= ((pairs > INT16_MAX) | (pairs < -INT16_MAX - 1)).any(axis=1)
    return [int(i) for i in np.flatnonzero(flagged)]


def _contraction_walks(node: onnx.NodeProto, q: np.ndarray, channels: int):
    """(weights [N, C, taps], input channel of each [N or 1, C, 1], the orders in which the
    kernel may walk K = C x taps), or None: MatMul/Gemm have one order, Conv two (NCHW and NHWC im2col)."""
    if node.op_type in ("MatMul", "Gemm") and q.ndim == 2:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0) if node.op_type == "Gemm" else 0
        weights = q if trans_b else q.T  # [N, K]
        if weights.shape[1] != channels:
            return None
        return weights[:, :, None], np.arange(channels)[None, :, None], [lambda v: v[:, :, 0]]
    if node.op_type == "Conv" and q.ndim >= 3:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_ch, per_group = q.shape[:2]
        if per_group * group != channels or out_ch % group:
            return None
        weights = q.reshape(out_ch, per_group, -1)
        base = (np.arange(out_ch) // (out_ch // group)) * per_group  # first input channel of each output's group
        channel = (base[:, None] + np.arange(per_group)[None, :])[:, :, None]
        nchw = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731  K = (c, kh, kw)
        nhwc = lambda v: v.transpose(0, 2, 1).reshape(v.shape[0], -1)  # noqa: E731  K = (kh, kw, c)
        return weights, channel, [nchw, nhwc]
    return None
