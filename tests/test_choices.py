"""The modelling-choices page covers every open point, with a reason and a current value."""

from dcicore.choices import CHOICES, choices_table, current_value
from dcicore.config import SystemConfig


def test_every_open_field_has_a_choice():
    named = {s for ch in CHOICES for s in ch.settings}
    open_fields = [n for n, (_, doc) in SystemConfig.field_docs().items() if "*open*" in doc]
    assert len(open_fields) >= 15
    missing = [f for f in open_fields if f"SystemConfig.{f}" not in named]
    assert not missing, f"open fields without a modelling choice: {missing}"


def test_design_open_points_are_listed():
    points = " ".join(ch.point.lower() for ch in CHOICES)
    for word in ("slot", "arrival", "subcarriers", "placement", "links", "eq 4", "penalty",
                 "background", "conflicts", "returns", "random", "aggregation"):
        assert word in points, word


def test_values_come_from_code():
    assert current_value("SystemConfig.penalty") == SystemConfig().penalty
    rows = choices_table()
    assert all(r["reason"] or not r["point"] for r in rows)
    assert any(r["value"] == repr(SystemConfig().slot_s) for r in rows)


def test_agent_open_points_are_listed():
    from dcicore.choices import AGENT_CHOICES

    points = " ".join(ch.point.lower() for ch in AGENT_CHOICES)
    for word in ("combinatorial action", "epoch", "top n", "covariance", "eq 15"):
        assert word in points, word
    # every named agent setting exists (current_value raises KeyError otherwise)
    for ch in AGENT_CHOICES:
        for s in ch.settings:
            if not s.startswith("dcicore."):
                assert current_value(s) is not None, s
