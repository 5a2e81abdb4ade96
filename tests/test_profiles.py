"""Tests for dcicore.profiles (the paper's 8-layer model) and dcicore.torch_model.

Every expected number is worked by hand from Sec 5.1 of the paper and written out as an
integer literal with its product in a comment, so a reader can check it without running code.
"""

from fractions import Fraction

import numpy as np
import pytest

from dcicore import profiles
from dcicore.profiles import LAYER_NAMES, TENSOR_SHAPES, paper_model

# C^l with ξ = 10 cycles per operation, conv3 by the paper's rule
# (input elements × kernels × 17).
EXPECTED_CYCLES_RULE = {
    "conv1": 8_355_840,  # 3·64·64 · 4 · 17 · 10
    "conv2": 44_564_480,  # 4·32·32 · 64 · 17 · 10
    "conv3": 178_257_920,  # 64·16·16 · 64 · 17 · 10
    "transformer": 454_164_000,  # 45.4164e6 · 10
    "conv4": 44_564_480,  # 64·8·8 · 64 · 17 · 10
    "conv5": 11_141_120,  # 64·4·4 · 64 · 17 · 10
    "conv6": 2_785_280,  # 64·2·2 · 64 · 17 · 10
    "fc": 11_430,  # (64 + 63) · 9 · 10
}
# conv3 as printed in the paper: 64·16·64 · 17 · 10
CONV3_PRINTED = 11_141_120
TOTAL_RULE = 743_844_550  # sum of the eight values above
TOTAL_PRINTED = 576_727_750  # TOTAL_RULE − 178_257_920 + 11_141_120

# O^l: output elements × 64 bits.
EXPECTED_OUTPUT_BITS = {
    "conv1": 262_144,  # 4·32·32 · 64
    "conv2": 1_048_576,  # 64·16·16 · 64
    "conv3": 262_144,  # 64·8·8 · 64
    "transformer": 262_144,  # 64·8·8 · 64
    "conv4": 65_536,  # 64·4·4 · 64
    "conv5": 16_384,  # 64·2·2 · 64
    "conv6": 4_096,  # 64·1·1 · 64
    "fc": 576,  # 9 · 64
}
INPUT_BITS = 786_432  # 3·64·64 · 64


# ---------------------------------------------------------------- profiles (numpy only)


def test_names_and_shapes():
    m = paper_model()
    assert m.names == LAYER_NAMES
    assert m.num_layers == 8
    assert m.workload_cycles.shape == (8,)
    assert m.output_bits.shape == (8,)


def test_workload_cycles_rule():
    m = paper_model(cycles_per_op=10, conv3_rule="rule")
    # all values are integers below 2**53, so float equality is exact
    assert dict(zip(m.names, m.workload_cycles.tolist())) == EXPECTED_CYCLES_RULE
    assert m.total_cycles == TOTAL_RULE


def test_workload_cycles_printed_differs_only_in_conv3():
    rule = paper_model(10, "rule")
    printed = paper_model(10, "printed")
    expected = dict(EXPECTED_CYCLES_RULE, conv3=CONV3_PRINTED)
    assert dict(zip(printed.names, printed.workload_cycles.tolist())) == expected
    differs = rule.workload_cycles != printed.workload_cycles
    assert [n for n, d in zip(LAYER_NAMES, differs) if d] == ["conv3"]
    # the printed value lacks exactly the factor 16 of conv3's input width
    assert rule.workload_cycles[2] == 16 * printed.workload_cycles[2]
    assert printed.total_cycles == TOTAL_PRINTED
    np.testing.assert_array_equal(rule.output_bits, printed.output_bits)
    assert rule.input_bits == printed.input_bits


def test_output_and_input_bits():
    m = paper_model()
    assert dict(zip(m.names, m.output_bits.tolist())) == EXPECTED_OUTPUT_BITS
    assert m.input_bits == INPUT_BITS


def test_cycles_scale_with_xi():
    np.testing.assert_array_equal(
        paper_model(1).workload_cycles * 10, paper_model(10).workload_cycles
    )


def test_block_cycles_and_data_before():
    m = paper_model()
    assert m.block_cycles(0, 2) == 8_355_840 + 44_564_480 + 178_257_920
    assert m.block_cycles(0, 7) == TOTAL_RULE
    assert m.data_bits_before(0) == INPUT_BITS
    assert m.data_bits_before(4) == EXPECTED_OUTPUT_BITS["transformer"]


def test_bad_conv3_rule():
    with pytest.raises(ValueError):
        paper_model(conv3_rule="other")


# ---------------------------------------------------------------- the PyTorch model

# torch is a dependency of dcicore, but the numpy tests above must not need it: the tests below
# get torch through this fixture and skip (rather than error) where it is missing.


@pytest.fixture(scope="module")
def tm():
    pytest.importorskip("torch")
    return pytest.importorskip("dcicore.torch_model")


def test_build_torch_model_and_forward(tm):
    import torch

    net = profiles.build_torch_model()
    assert isinstance(net, tm.PaperNet)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, *TENSOR_SHAPES[0]))
    assert out.shape == (2, 9)


def test_layer_modules_order(tm):
    net = tm.PaperNet()
    assert list(tm.layer_modules(net)) == list(LAYER_NAMES)


def test_layer_output_shapes_match_paper(tm):
    assert tm.layer_output_shapes() == [tuple(s) for s in TENSOR_SHAPES[1:]]


CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")


@pytest.fixture(scope="module")
def comparison(tm):
    return {row["layer"]: row for row in tm.compare_with_paper(10, "rule")}


def test_flop_comparison_convs(comparison):
    # Tolerance: none. Both counts are exact integers (the counter is analytic, not timed), so
    # the ratio must be exactly the derived factor. A stride-2 3×3 conv does
    # (C_out·H/2·W/2) · C_in · 9 MACs; the paper counts (C_in·H·W) · C_out · 17 operations;
    # the ratio is (1/4)·(9/17) = 9/68 for every conv layer.
    for name in CONVS:
        row = comparison[name]
        assert row["torch_flops"] == 2 * row["torch_macs"]
        assert Fraction(int(row["torch_macs"]), int(row["paper_ops"])) == Fraction(9, 68), name
    # hand-worked: conv1 = 4·32·32 outputs · 3 inputs · 9 taps
    assert comparison["conv1"]["torch_macs"] == 110_592
    # conv6: 1×1 output, still 9 taps counted (padding included) · 64 · 64
    assert comparison["conv6"]["torch_macs"] == 36_864


def test_flop_comparison_conv3_printed(tm):
    rows = {r["layer"]: r for r in tm.compare_with_paper(10, "printed")}
    # the printed paper value is 16× smaller, so the same torch count gives 16 · 9/68 = 36/17
    conv3 = rows["conv3"]
    assert Fraction(int(conv3["torch_macs"]), int(conv3["paper_ops"])) == Fraction(36, 17)


def test_flop_comparison_fc(comparison):
    # torch: 64·9 = 576 MACs (bias not counted); paper: (64 + 63)·9 = 1143 ops → 64/127, exact
    assert comparison["fc"]["torch_macs"] == 576
    assert Fraction(576, int(comparison["fc"]["paper_ops"])) == Fraction(64, 127)


def test_flop_comparison_transformer(tm, comparison):
    row = comparison["transformer"]
    # exact: the counter sees the matrix products of our interpretation, whose closed form is
    # 4 units × (64·64·768 + 2·64²·256 + 64·256·64 + 2·64·64·256) = 33,554,432 MACs
    assert row["torch_macs"] == tm.transformer_macs() == 33_554_432
    # Band: the paper's 45.4164e6 comes from a model whose feed-forward width (and other details)
    # it does not state, so no exact match is expected. We require only that our reading is
    # the same size class, within a factor of 2 either way (measured: 0.739). A factor 2 is
    # what separates plausible readings from each other (no FFN 0.55, PyTorch's default FFN
    # 2048 gives 2.03), so a wider band would accept anything and a narrower one would mean
    # tuning the unstated width to the paper's number.
    assert 0.5 <= row["ratio"] <= 2.0
    assert row["ratio"] == pytest.approx(33_554_432 / 45_416_400)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(ffn_dim=0),
        dict(transformer_units=1, heads=32, ffn_dim=2048),
    ],
)
def test_transformer_closed_form_matches_counter(tm, kwargs):
    net = tm.PaperNet(**kwargs)
    counted = tm.count_layer_flops(net)["transformer"] // 2
    closed = tm.transformer_macs(
        units=kwargs.get("transformer_units", 4),
        heads=kwargs.get("heads", 8),
        head_dim=kwargs.get("head_dim", 32),
        ffn_dim=kwargs.get("ffn_dim", 256),
    )
    assert counted == closed


def test_counting_restores_training_mode(tm):
    net = tm.PaperNet()
    net.train()
    tm.count_layer_flops(net)
    assert net.training
