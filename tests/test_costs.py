"""Eqs 1-6 on hand-worked values, broadcasting, and the checks of constraints 7-10."""

import numpy as np
import pytest

from dcicore import costs


def test_eq1_compute_delay():
    # 7.44e8 cycles at 1 GHz -> 0.744 s
    assert costs.compute_delay(7.44e8, 1e9) == pytest.approx(0.744)


def test_eq2_rate_hand_worked():
    # B/S = 20 MHz / 10 = 2 MHz; SNR = g p / noise = 3e-12 * 1 / 1e-12 = 3; log2(1+3) = 2
    assert costs.transmission_rate(20e6, 10, 3e-12, 1.0, 1e-12) == pytest.approx(4e6)


def test_eq3_eq5_transmission():
    # the raw input, 3*64*64 values * 64 bit = 786432 bit, at 4 Mbit/s
    assert costs.transmission_delay(786432, 4e6) == pytest.approx(0.196608)
    assert costs.transmission_energy(1.0, 786432, 4e6) == pytest.approx(0.196608)
    assert costs.transmission_energy(0.5, 786432, 4e6) == pytest.approx(0.098304)


def test_eq4_compute_energy():
    # k0 C r^2 = 1e-26 * 1e9 * (1e9)^2 = 10 J
    assert costs.compute_energy(1e-26, 1e9, 1e9) == pytest.approx(10.0)
    # quadratic in the rate
    assert costs.compute_energy(1e-26, 1e9, 2e9) == pytest.approx(40.0)


def test_eq6_system_cost():
    assert costs.system_cost(10.0, 0.5, 0.8, 0.2) == pytest.approx(8.1)


def test_channel_gain():
    assert costs.channel_gain(100.0) == pytest.approx(1e-8)
    # floored distance
    assert costs.channel_gain(0.0, 4.0, 10.0) == pytest.approx(1e-4)


def test_broadcasting():
    w = np.array([1e8, 2e8])
    r = np.array([[1e9], [2e9]])
    out = costs.compute_delay(w, r)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.1, 0.2], [0.05, 0.1]])
    e = costs.compute_energy(1e-26, w, r)
    assert e.shape == (2, 2) and np.all(e > 0)


def test_constraint_checks():
    assert costs.check_subcarriers([0, 1, 1], [True, True, False])
    assert not costs.check_subcarriers([0, 1, 1], [True, True, True])
    assert costs.check_capacity([0, 0, 1], [40, 60, 100], 100)
    assert not costs.check_capacity([0, 0, 1], [40, 61, 100], 100)
    assert costs.check_capacity([0, 1], [50, 20], np.array([50, 30]))
    assert not costs.check_capacity([0, 1], [50, 40], np.array([50, 30]))
    assert costs.check_all_layers([0, 3, 5], [2, 4, 7], 8)
    assert not costs.check_all_layers([0, 4], [2, 7], 8)  # layer 3 skipped
    assert not costs.check_all_layers([0, 2], [2, 7], 8)  # layer 2 twice
    assert costs.check_deadline([1.0, 1.5, 0.5], 3.0)
    assert not costs.check_deadline([1.0, 1.5, 0.6], 3.0)


def test_cost_optimal_rate():
    # r* = (w_d / (2 w_e k0))^(1/3) = (0.2 / 1.6e-26)^(1/3) = 2.3208e8 Hz
    r = costs.cost_optimal_rate(0.8, 0.2, 1e-26)
    assert r == pytest.approx((0.2 / 1.6e-26) ** (1 / 3))
    # the cost per cycle is lowest there
    f = lambda x: 0.8 * 1e-26 * x**2 + 0.2 / x  # noqa: E731
    assert f(r) < f(0.99 * r) and f(r) < f(1.01 * r)
    assert np.isinf(costs.cost_optimal_rate(0.0, 0.2, 1e-26))
    assert np.isinf(costs.cost_optimal_rate(0.8, 0.2, 0.0))
