import numpy as np
import pytest

from lowprec_core._quantize.params import activation_params, quantize_bias, quantize_weight


def test_asymmetric_uint8_maps_the_range_ends_to_0_and_255():
    scale, zp = activation_params(-1.0, 3.0, np.uint8, symmetric=False)
    assert scale == pytest.approx(4.0 / 255)
    assert zp == 64  # round(1 / (4/255)) = round(63.75)
    assert np.rint(-1.0 / scale) + zp == 0 and np.rint(3.0 / scale) + zp == 255


def test_range_always_contains_zero():
    scale, zp = activation_params(2.0, 6.0, np.uint8, symmetric=False)
    assert zp == 0 and scale == pytest.approx(6.0 / 255)
    scale, zp = activation_params(-6.0, -2.0, np.uint8, symmetric=False)
    assert zp == 255 and scale == pytest.approx(6.0 / 255)


def test_symmetric_uint8_centres_the_zero_point():
    scale, zp = activation_params(-1.0, 4.0, np.uint8, symmetric=True)
    assert zp == 128 and scale == pytest.approx(8.0 / 255)


def test_constant_tensor_gets_a_usable_scale():
    assert activation_params(0.0, 0.0, np.uint8, symmetric=False) == (np.float32(1.0), 0)


def test_per_channel_weight_scales_follow_the_axis():
    w = np.zeros((2, 3, 1, 1), np.float32)
    w[0, 1] = 2.54
    w[1, 2] = -1.27
    q, scale = quantize_weight(w, 0, np.int8)
    np.testing.assert_allclose(scale, [0.02, 0.01], rtol=1e-6)
    assert q[0, 1, 0, 0] == 127 and q[1, 2, 0, 0] == -127 and q.dtype == np.int8
    _, scale_axis1 = quantize_weight(w, 1, np.int8)
    assert scale_axis1.shape == (3,) and scale_axis1[0] == 1.0  # an all-zero channel


def test_bias_is_int32_at_input_times_weight_scale():
    q, scale = quantize_bias(np.array([0.5, -0.25], np.float32), np.float32(0.1), np.array([0.01, 0.02], np.float32))
    np.testing.assert_allclose(scale, [0.001, 0.002], rtol=1e-6)
    assert q.dtype == np.int32 and list(q) == [500, -125]
