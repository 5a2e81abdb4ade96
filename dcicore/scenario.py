"""Scenario draws: node positions, capacities, links and channel rates, background load, arrivals.

Explained in the book's chapter "The DCI system in time". Every function takes an explicit
``numpy.random.Generator``; nothing here touches a global random state.

Geometry (an open point, see the modelling-choices page): a square area of side
``area_m`` with the MEC server (node 0) at its centre and the N EDs uniform in the square.
An ED reaches the MEC within ``mec_range_m`` and another ED within ``d2d_range_m``. The channel
gain of a link is g = d^-4 (Sec 5.1) on every subcarrier, so the per-subcarrier rate of a link
(Eq 2) depends on the link only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcicore.config import SystemConfig
from dcicore.costs import channel_gain, transmission_rate

__all__ = ["Scenario", "make_scenario", "scenario_from", "draw_background", "draw_arrivals"]


@dataclass(frozen=True)
class Scenario:
    """The static part of one episode (drawn at ``reset``).

    Attributes (N+1 nodes, node 0 = MEC)
    ----------
    positions_m : (N+1, 2) float, metres.
    capacity_hz : (N+1,) float, R^max_n in Hz.
    distance_m : (N+1, N+1) float, metres.
    link : (N+1, N+1) bool, True where data can move directly (diagonal True: staying put).
    rate_bps : (N+1, N+1) float, Eq 2 rate of one subcarrier on each link, bit/s
        (0 where there is no link; the diagonal is unused).
    """

    positions_m: np.ndarray
    capacity_hz: np.ndarray
    distance_m: np.ndarray
    link: np.ndarray
    rate_bps: np.ndarray


def make_scenario(config: SystemConfig, rng: np.random.Generator) -> Scenario:
    """Draw positions and ED capacities and derive distances, links and rates."""
    n = config.num_devices
    pos = np.empty((n + 1, 2))
    pos[0] = config.area_m / 2.0
    pos[1:] = rng.uniform(0.0, config.area_m, size=(n, 2))
    cap = np.empty(n + 1)
    cap[0] = config.mec_capacity_hz
    cap[1:] = rng.uniform(config.ed_capacity_min_hz, config.ed_capacity_max_hz, size=n)
    return scenario_from(config, pos, cap)


def scenario_from(config: SystemConfig, positions_m, capacity_hz) -> Scenario:
    """A scenario with given node positions (N+1, 2) in m and capacities (N+1,) in Hz.

    Use it for hand-built instances; links and rates follow from the config's ranges and Eq 2.
    """
    n = config.num_devices
    pos = np.array(positions_m, dtype=np.float64)
    cap = np.array(capacity_hz, dtype=np.float64)
    if pos.shape != (n + 1, 2):
        raise ValueError(f"positions_m must be an array of shape ({n + 1}, 2), got {pos.shape}")
    if cap.shape != (n + 1,) or np.any(~np.isfinite(cap)) or np.any(cap <= 0):
        raise ValueError(f"capacity_hz must be {n + 1} positive finite values (Hz), got {cap!r}")
    diff = pos[:, None, :] - pos[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    rng_limit = np.full((n + 1, n + 1), config.d2d_range_m)
    rng_limit[0, :] = config.mec_range_m
    rng_limit[:, 0] = config.mec_range_m
    link = dist <= rng_limit
    np.fill_diagonal(link, True)
    gain = channel_gain(dist, config.path_loss_exponent, config.min_distance_m)
    rate = transmission_rate(
        config.bandwidth_hz, config.num_subcarriers, gain, config.tx_power_w, config.noise_w
    )
    rate = np.where(link, rate, 0.0)
    np.fill_diagonal(rate, 0.0)
    for arr in (pos, cap, dist, link, rate):
        arr.setflags(write=False)
    return Scenario(pos, cap, dist, link, rate)


def draw_background(config: SystemConfig, rng: np.random.Generator) -> np.ndarray:
    """Background load of every node for one slot, as a fraction of its capacity, shape (N+1,).

    Models the other work on each node that the scheduler does not control, which is what makes
    the available resources change from slot to slot (Fig 5 of the paper).
    """
    load = np.empty(config.num_nodes)
    load[0] = rng.uniform(0.0, config.mec_background_load_max)
    load[1:] = rng.uniform(0.0, config.background_load_max, size=config.num_devices)
    return load


def draw_arrivals(config: SystemConfig, rng: np.random.Generator) -> np.ndarray:
    """New tasks of every ED in one slot: Poisson(λ·slot_s), shape (N,), int."""
    return rng.poisson(config.arrival_rate_hz * config.slot_s, size=config.num_devices)
