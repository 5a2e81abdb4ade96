"""SystemConfig: the paper's defaults and the validation of every field."""

import dataclasses
import math

import pytest

from dcicore.config import SystemConfig, dbm_to_w


def test_paper_defaults():
    c = SystemConfig()
    assert c.num_layers == 8
    assert (c.ed_capacity_min_hz, c.ed_capacity_max_hz) == (0.1e9, 1.0e9)
    assert c.mec_capacity_hz == 10e9
    assert c.deadline_s == 3.0
    assert c.bandwidth_hz == 20e6
    assert c.tx_power_w == 1.0
    assert c.noise_dbm == -113.0
    assert c.k0 == 1e-26
    assert c.path_loss_exponent == 4.0
    assert (c.w_energy, c.w_delay) == (0.8, 0.2)
    assert c.share_levels == 100


def test_noise_in_watts():
    # -113 dBm = 10^(-11.3) mW = 5.0119e-15 W
    assert math.isclose(SystemConfig().noise_w, 10 ** (-11.3) / 1000, rel_tol=1e-12)
    assert math.isclose(dbm_to_w(30.0), 1.0)


def test_derived_sizes():
    c = SystemConfig(num_devices=7, max_tasks_per_device=2)
    assert c.num_nodes == 8
    assert c.max_tasks == 14


def test_frozen_and_replace():
    c = SystemConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.num_devices = 3
    assert dataclasses.replace(c, penalty=20.0).penalty == 20.0
    assert c.to_dict()["num_devices"] == 10


BAD = [
    ("num_devices", 0, r"num_devices must be an integer in \[1, 1000\]"),
    ("num_devices", 2.5, "num_devices"),
    ("num_devices", True, "num_devices"),
    ("num_layers", 6, "num_layers"),
    ("ed_capacity_min_hz", -1.0, "ed_capacity_min_hz"),
    ("ed_capacity_max_hz", float("nan"), "ed_capacity_max_hz"),
    ("mec_capacity_hz", 0.0, "mec_capacity_hz"),
    ("deadline_s", -3.0, "deadline_s"),
    ("bandwidth_hz", float("nan"), "bandwidth_hz"),
    ("tx_power_w", 0.0, "tx_power_w"),
    ("k0", -1e-26, "k0"),
    ("w_energy", 1.5, r"w_energy must be a number in \[0, 1\]"),
    ("w_delay", -0.1, "w_delay"),
    ("slot_s", 0.0, "slot_s"),
    ("episode_slots", 0, "episode_slots"),
    ("arrival_rate_hz", -0.5, "arrival_rate_hz"),
    ("max_tasks_per_device", 0, "max_tasks_per_device"),
    ("num_subcarriers", 0, "num_subcarriers"),
    ("num_subcarriers", 3.0, "num_subcarriers"),
    ("area_m", 0.0, "area_m"),
    ("mec_range_m", -1.0, "mec_range_m"),
    ("background_load_max", 1.0, "background_load_max"),
    ("mec_background_load_max", float("nan"), "mec_background_load_max"),
    ("penalty", -1.0, "penalty"),
    ("share_levels", 0, "share_levels"),
    ("conv3_rule", "other", "conv3_rule"),
    ("return_result", 1, "return_result"),
    ("cycles_per_op", 0.0, "cycles_per_op"),
]


@pytest.mark.parametrize("field,value,message", BAD)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SystemConfig(**{field: value})


def test_inverted_capacity_range():
    with pytest.raises(ValueError, match="ed_capacity_min_hz must be <= ed_capacity_max_hz"):
        SystemConfig(ed_capacity_min_hz=2e9, ed_capacity_max_hz=1e9)


def test_both_weights_zero():
    with pytest.raises(ValueError, match="not both 0"):
        SystemConfig(w_energy=0.0, w_delay=0.0)


def test_every_field_is_documented():
    docs = SystemConfig.field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(SystemConfig)}
    for name, (_, doc) in docs.items():
        assert len(doc) > 10, name
