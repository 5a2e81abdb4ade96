"""Eqs 1–6 of the paper and the checks of constraints 7–10, as pure vectorized numpy.

Explained in the book's chapters "Delay and energy" (Eqs 1–5) and "System cost and the
optimisation problem" (Eq 6, constraints 7–10).

Every function broadcasts over numpy arrays (scalars work too) and returns float64. Units:
cycles for workload, Hz (cycles/s or 1/s) for shares and bandwidth, bits for data, W for
power, J for energy, s for delay.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "compute_delay",
    "transmission_rate",
    "transmission_delay",
    "compute_energy",
    "transmission_energy",
    "system_cost",
    "channel_gain",
    "cost_optimal_rate",
    "check_subcarriers",
    "check_capacity",
    "check_all_layers",
    "check_deadline",
]


def _f(x):
    return np.asarray(x, dtype=np.float64)


def compute_delay(workload_cycles, share_hz):
    """Eq 1: computation delay T^Comp = C[u] / r[u], in s.

    Parameters
    ----------
    workload_cycles : array_like
        C[u], cycles of the layer block (sum of its layers' workloads).
    share_hz : array_like
        r[u], computing rate allocated to the block, in Hz (cycles/s); must be > 0.
    """
    return _f(workload_cycles) / _f(share_hz)


def transmission_rate(bandwidth_hz, num_subcarriers, gain, tx_power_w, noise_w):
    """Eq 2: rate of one OFDMA subcarrier, R = (B/S) · log2(1 + g·p/δ²), in bit/s.

    Parameters
    ----------
    bandwidth_hz : B, total bandwidth (Hz). num_subcarriers : S.
    gain : g, channel gain of the subcarrier (dimensionless, g = d^-4 here).
    tx_power_w : p (W). noise_w : δ² (W).
    """
    return (_f(bandwidth_hz) / _f(num_subcarriers)) * np.log2(
        1.0 + _f(gain) * _f(tx_power_w) / _f(noise_w)
    )


def transmission_delay(output_bits, rate_bps):
    """Eq 3: transmission delay T^Trans = O[u] / R^Trans, in s."""
    return _f(output_bits) / _f(rate_bps)


def compute_energy(k0, workload_cycles, share_hz):
    """Eq 4: computation energy E^Comp = k0 · C[u] · r[u]², in J.

    With r in Hz this is the usual dynamic-power model (power k0·r³ for C/r seconds).
    """
    r = _f(share_hz)
    return _f(k0) * _f(workload_cycles) * r * r


def transmission_energy(tx_power_w, output_bits, rate_bps):
    """Eq 5: transmission energy E^Trans = p · O[u] / R^Trans, in J."""
    return _f(tx_power_w) * _f(output_bits) / _f(rate_bps)


def system_cost(energy_j, delay_s, w_energy, w_delay):
    """Eq 6 (one term): ω_e · E + ω_d · T, in cost units (J and s weighted)."""
    return _f(w_energy) * _f(energy_j) + _f(w_delay) * _f(delay_s)


def cost_optimal_rate(w_energy, w_delay, k0):
    """Rate r* minimising the cost per cycle ω_e·k0·r² + ω_d/r of any block (Eqs 1, 4, 6), in Hz.

    d/dr [ω_e k0 C r² + ω_d C / r] = 0 gives r* = (ω_d / (2 ω_e k0))^(1/3), whatever C is;
    inf where energy is free (ω_e = 0 or k0 = 0): then faster is always cheaper.
    """
    k0 = _f(k0)
    w_e = _f(w_energy)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (_f(w_delay) / (2.0 * w_e * k0)) ** (1.0 / 3.0)
    return np.where((k0 > 0) & (w_e > 0), r, np.inf)


def channel_gain(distance_m, exponent=4.0, min_distance_m=1.0):
    """g = d^-exponent (Sec 5.1 uses exponent 4), with d floored at ``min_distance_m``."""
    d = np.maximum(_f(distance_m), float(min_distance_m))
    return d ** (-float(exponent))


# --- constraints 7–10 ------------------------------------------------------------------------


def check_subcarriers(subcarrier, transmitting) -> bool:
    """Constraint 7: in one slot no subcarrier is used by two transmitting tasks.

    ``subcarrier`` (int array, one per task) counts only where ``transmitting`` is True.
    """
    used = np.asarray(subcarrier)[np.asarray(transmitting, dtype=bool)]
    return used.size == np.unique(used).size


def check_capacity(node, share, capacity=1.0, tol=1e-9) -> bool:
    """Constraint 8: per node, the shares allocated in one slot sum to at most its capacity.

    ``node`` (int array) and ``share`` (array, same shape) list every allocation in force
    in the slot; ``capacity`` is a scalar or an array indexed by node, in the same unit.
    """
    node = np.asarray(node, dtype=np.int64)
    share = _f(share)
    if node.size == 0:
        return True
    total = np.bincount(node, weights=share)
    cap = np.broadcast_to(_f(capacity), (max(total.size, 1),)) if np.ndim(capacity) == 0 else _f(capacity)[: total.size]
    return bool(np.all(total <= cap + tol))


def check_all_layers(block_starts, block_ends, num_layers) -> bool:
    """Constraint 9: a task's blocks [i:j] tile layers 0..L-1 in order, without gap or overlap."""
    starts = np.asarray(block_starts)
    ends = np.asarray(block_ends)
    if starts.size == 0:
        return False
    if starts[0] != 0 or ends[-1] != num_layers - 1:
        return False
    return bool(np.all(ends >= starts) and np.all(starts[1:] == ends[:-1] + 1))


def check_deadline(stage_delays_s, deadline_s, tol=1e-9) -> bool:
    """Constraint 10: Σ_t (T^Comp + T^Trans) ≤ T for one task."""
    return float(np.sum(_f(stage_delays_s))) <= float(deadline_s) + tol
