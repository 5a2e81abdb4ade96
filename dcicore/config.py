"""Configuration of the DCI system: the paper's Sec 5.1 settings and every point it leaves open.

Explained in the book's chapters "Delay and energy" and "The DCI system in time"; every open
point is listed, with its value and reason, on ``book/modelling-choices.md``.

All configs are frozen dataclasses. Derive variants with :func:`dataclasses.replace`::

    cfg = SystemConfig(num_devices=50)
    cfg2 = dataclasses.replace(cfg, penalty=20.0)

Construction validates every field and raises :class:`ValueError` naming the field and the
allowed range, so a bad scenario fails before any simulation starts.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

__all__ = ["SystemConfig", "check_range", "dbm_to_w"]


def dbm_to_w(dbm: float) -> float:
    """Convert a power in dBm to watts: ``P_W = 10**(dBm/10) / 1000``."""
    return 10.0 ** (dbm / 10.0) / 1000.0


def check_range(name, value, lo=None, hi=None, *, integer=False, lo_open=False, hi_open=False):
    """Raise ``ValueError`` unless ``lo <= value <= hi`` (open ends if asked) and not NaN.

    The message names the field and the allowed range, e.g.
    ``num_devices must be an integer in [1, inf), got 0``.
    """
    left = "(" if lo_open else "["
    right = ")" if (hi_open or hi is None) else "]"
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    kind = "an integer" if integer else "a number"
    allowed = f"{name} must be {kind} in {left}{lo_s}, {hi_s}{right}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(allowed)
    if integer and not float(value).is_integer():
        raise ValueError(allowed)
    if integer and not isinstance(value, numbers.Integral):
        raise ValueError(allowed)
    if math.isnan(value):
        raise ValueError(allowed)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(allowed)
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(allowed)


@dataclass(frozen=True)
class SystemConfig:
    """The DCI system: one MEC server (node 0) and ``num_devices`` edge devices (nodes 1..N).

    Fields marked *paper* are the values of Sec 5.1; fields marked *open* are points the paper
    leaves open, each with the default this project chose (reasons on the modelling-choices page).
    """

    # --- paper, Sec 5.1 ---------------------------------------------------------------------
    num_devices: int = 10
    """N, number of edge devices (EDs); the paper sweeps 5..50. *paper*"""
    num_layers: int = 8
    """L, layers of the on-device model (the paper's 8-layer CNN+transformer). *paper*"""
    ed_capacity_min_hz: float = 0.1e9
    """Lower end of the ED capacity R^max ~ U[min, max], in Hz (cycles/s). *paper*"""
    ed_capacity_max_hz: float = 1.0e9
    """Upper end of the ED capacity range, in Hz. *paper*"""
    mec_capacity_hz: float = 10.0e9
    """R_0^max, capacity of the MEC server, in Hz. *paper*"""
    deadline_s: float = 3.0
    """T, delay tolerance of every inference task, in s (constraint 10). *paper*"""
    bandwidth_hz: float = 20e6
    """B, total bandwidth shared by the OFDMA subcarriers, in Hz. *paper*"""
    tx_power_w: float = 1.0
    """p, transmit power of a node sending intermediate data, in W. *paper*"""
    noise_dbm: float = -113.0
    """δ², Gaussian noise power, in dBm (see :attr:`noise_w`). *paper*"""
    k0: float = 1e-26
    """k_0, computational efficiency constant of Eq 4, in J/(cycle·Hz²). *paper*"""
    path_loss_exponent: float = 4.0
    """Channel gain g = d^-exponent, d in m. *paper* (g = d^-4)"""
    w_energy: float = 0.8
    """ω_e, weight of energy (J) in the system cost, Eq 6. *paper*"""
    w_delay: float = 0.2
    """ω_d, weight of delay (s) in the system cost, Eq 6. *paper*"""
    cycles_per_op: float = 10.0
    """ξ, CPU cycles per floating-point multiply/add, used to turn operations into cycles. *paper*"""
    conv3_rule: str = "rule"
    """*open*: conv3's workload. ``"rule"`` = the paper's own rule 64·16·16·64·17 (input elements
    × kernels × 17); ``"printed"`` = the paper's printed 64·16·64·17 (a dropped factor 16)."""

    # --- open: time -------------------------------------------------------------------------
    slot_s: float = 0.5
    """*open*: length of one decision slot, in s. Every slot each ready task gets one action."""
    episode_slots: int = 40
    """*open*: slots per episode (the horizon); 40 × 0.5 s = 20 s of system time."""
    arrival_rate_hz: float = 0.5
    """*open*: Poisson task-arrival rate of each ED, in tasks/s."""
    max_tasks_per_device: int = 3
    """*open*: concurrent tasks an ED can hold; an arrival beyond it is dropped (a failure)."""

    # --- open: radio and geometry -------------------------------------------------------------
    num_subcarriers: int = 10
    """S, *open*: OFDMA subcarriers, each of bandwidth B/S (Eq 2); one task per subcarrier (7)."""
    area_m: float = 500.0
    """*open*: side of the square area, in m; the MEC sits at its centre, EDs uniform in it."""
    mec_range_m: float = 250.0
    """*open*: an ED reaches the MEC only within this distance, in m (corners are out of reach)."""
    d2d_range_m: float = 150.0
    """*open*: two EDs have a direct link only within this distance, in m."""
    min_distance_m: float = 10.0
    """*open*: distances are floored at this value, in m, so g = d^-4 stays finite."""

    # --- open: energy, load, penalty -----------------------------------------------------------
    mec_k0: float = 1e-26
    """*open*: k_0 charged for work done on the MEC (Eq 4 with r in Hz). Default: the same k_0."""
    background_load_max: float = 0.5
    """*open*: each slot an ED's own background load is U[0, this], a fraction of its capacity."""
    mec_background_load_max: float = 0.2
    """*open*: the MEC's background load per slot is U[0, this], a fraction of its capacity."""
    penalty: float = 10.0
    """P, *open*: cost added for every failed task (Eq 13), in cost units."""
    share_levels: int = 100
    """R's discretisation: shares 1/levels .. levels/levels of a node's capacity. *paper* (100)"""
    share_action: str = "absolute"
    """*open* (an agent aid): how the share part R of an action is read. ``"absolute"`` (the
    paper): index k means k+1 % of the node's capacity. ``"relative"``: index k means the
    just-fast-enough level of the chosen node and block (its deadline share, the block getting
    a time budget proportional to its cycles) times 1 + k/(levels−1), i.e. ×1 … ×2. Learning
    agents use it: with absolute shares the cheap-and-feasible band is 1–2 levels wide."""
    conflict_rule: str = "repair"
    """*open*: what an action that breaks a link, subcarrier (7) or capacity (8) rule does.
    ``"repair"`` (default): the environment fixes it by the rules of :mod:`dcicore.schedule`;
    ``"fail"``: the task fails with the penalty P instead (penalising invalid actions)."""
    return_result: bool = False
    """*open*: send the final output (9 values) back to the source ED. Default False: the paper
    charges no such transfer, and it is 576 bits."""

    def __post_init__(self) -> None:
        check_range("num_devices", self.num_devices, 1, 1000, integer=True)
        check_range("num_layers", self.num_layers, 8, 8, integer=True)
        check_range("ed_capacity_min_hz", self.ed_capacity_min_hz, 0, None, lo_open=True)
        check_range("ed_capacity_max_hz", self.ed_capacity_max_hz, 0, None, lo_open=True)
        if self.ed_capacity_min_hz > self.ed_capacity_max_hz:
            raise ValueError(
                "ed_capacity_min_hz must be <= ed_capacity_max_hz (range [min, max]), got "
                f"min={self.ed_capacity_min_hz!r} > max={self.ed_capacity_max_hz!r}"
            )
        check_range("mec_capacity_hz", self.mec_capacity_hz, 0, None, lo_open=True)
        check_range("deadline_s", self.deadline_s, 0, None, lo_open=True)
        check_range("bandwidth_hz", self.bandwidth_hz, 0, None, lo_open=True)
        check_range("tx_power_w", self.tx_power_w, 0, None, lo_open=True)
        check_range("noise_dbm", self.noise_dbm, -300, 100)
        check_range("k0", self.k0, 0, None)
        check_range("path_loss_exponent", self.path_loss_exponent, 0, 10)
        check_range("w_energy", self.w_energy, 0, 1)
        check_range("w_delay", self.w_delay, 0, 1)
        if self.w_energy == 0 and self.w_delay == 0:
            raise ValueError("w_energy and w_delay must be in [0, 1] and not both 0, got 0 and 0")
        check_range("cycles_per_op", self.cycles_per_op, 0, None, lo_open=True)
        if self.conv3_rule not in ("rule", "printed"):
            raise ValueError(f"conv3_rule must be one of 'rule', 'printed', got {self.conv3_rule!r}")
        check_range("slot_s", self.slot_s, 0, None, lo_open=True)
        check_range("episode_slots", self.episode_slots, 1, 100_000, integer=True)
        check_range("arrival_rate_hz", self.arrival_rate_hz, 0, None)
        check_range("max_tasks_per_device", self.max_tasks_per_device, 1, 64, integer=True)
        check_range("num_subcarriers", self.num_subcarriers, 1, 10_000, integer=True)
        check_range("area_m", self.area_m, 0, None, lo_open=True)
        check_range("mec_range_m", self.mec_range_m, 0, None)
        check_range("d2d_range_m", self.d2d_range_m, 0, None)
        check_range("min_distance_m", self.min_distance_m, 0, None, lo_open=True)
        check_range("mec_k0", self.mec_k0, 0, None)
        check_range("background_load_max", self.background_load_max, 0, 1, hi_open=True)
        check_range("mec_background_load_max", self.mec_background_load_max, 0, 1, hi_open=True)
        check_range("penalty", self.penalty, 0, None)
        check_range("share_levels", self.share_levels, 1, 10_000, integer=True)
        if self.share_action not in ("absolute", "relative"):
            raise ValueError(f"share_action must be one of 'absolute', 'relative', got {self.share_action!r}")
        if self.conflict_rule not in ("repair", "fail"):
            raise ValueError(f"conflict_rule must be one of 'repair', 'fail', got {self.conflict_rule!r}")
        if not isinstance(self.return_result, bool):
            raise ValueError(f"return_result must be True or False, got {self.return_result!r}")

    # --- derived quantities ---------------------------------------------------------------------
    @property
    def noise_w(self) -> float:
        """δ² in W (−113 dBm ≈ 5.01e-15 W)."""
        return dbm_to_w(self.noise_dbm)

    @property
    def num_nodes(self) -> int:
        """N + 1 computing nodes: the MEC (index 0) and the EDs (1..N)."""
        return self.num_devices + 1

    @property
    def max_tasks(self) -> int:
        """Rows of the task table: N × max_tasks_per_device."""
        return self.num_devices * self.max_tasks_per_device

    @property
    def deadline_slots(self) -> float:
        """The deadline measured in slots (T / slot length)."""
        return self.deadline_s / self.slot_s

    def to_dict(self) -> dict:
        """``dataclasses.asdict`` of the config: store it beside every result."""
        return asdict(self)

    @classmethod
    def field_docs(cls) -> dict:
        """Field name -> (default, docstring) for the book's modelling-choices table."""
        import inspect

        src = inspect.getsource(cls)
        docs = {}
        for f in fields(cls):
            marker = f"    {f.name}:"
            start = src.find(marker)
            doc = ""
            if start >= 0:
                q = src.find('"""', start)
                end = src.find('"""', q + 3)
                doc = " ".join(src[q + 3 : end].split())
            docs[f.name] = (f.default, doc)
        return docs
