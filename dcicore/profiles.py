"""The paper's 8-layer on-device model (Sec 5.1): workload C and output size O per layer.

Explained in the book's chapter "Edge inference and DNN partitioning".

The model is, in order: conv1, conv2, conv3, transformer, conv4, conv5, conv6, FC. Every
number here is *computed* from the paper's rules, not typed in:

* tensor sizes F (elements): input 3×64×64, then 4×32×32, 64×16×16, 64×8×8 (conv3),
  64×8×8 (transformer keeps the shape), 64×4×4, 64×2×2, 64×1×1, and 9 outputs;
* output bits O^l = F^l × 64 (64-bit floats);
* a convolution layer costs "input elements × kernels × 17" multiply/adds (17 for one 3×3
  convolution: 9 multiplies + 8 adds), FC costs (64 + 63) × 9, the transformer 45.4164e6
  (the paper's calflops count); cycles C^l = operations × ξ.

conv3: the paper prints 64·16·64·17, but its own rule (input elements 64·16·16 × 64 kernels
× 17) gives 64·16·16·64·17. We follow the rule by default (``conv3_rule="rule"``): the printed
value lacks a factor 16 that every other conv layer has, and would make conv3 (16× the input
of conv4) cheaper than conv4. ``conv3_rule="printed"`` reproduces the printed value.

The same model in PyTorch is :func:`build_torch_model` (imported lazily, so the numpy layers
of dcicore never import torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LAYER_NAMES",
    "TENSOR_SHAPES",
    "ModelProfile",
    "paper_model",
    "conv_ops",
    "TRANSFORMER_OPS",
    "OPS_PER_CONV",
    "BITS_PER_VALUE",
]

LAYER_NAMES = ("conv1", "conv2", "conv3", "transformer", "conv4", "conv5", "conv6", "fc")

#: Tensor shapes F^0..F^8 of Sec 5.1: input, then the output of each of the 8 layers.
TENSOR_SHAPES = (
    (3, 64, 64),
    (4, 32, 32),
    (64, 16, 16),
    (64, 8, 8),
    (64, 8, 8),
    (64, 4, 4),
    (64, 2, 2),
    (64, 1, 1),
    (9,),
)

#: Multiply/add operations of one 3×3 convolution window (9 multiplies + 8 adds).
OPS_PER_CONV = 17
#: Storage of one value: 64-bit floats (Sec 5.1).
BITS_PER_VALUE = 64
#: Multiply-adds of the transformer layer as the paper counted them with calflops.
TRANSFORMER_OPS = 45.4164e6
#: Kernels per conv layer: 4 in the first, 64 in the others.
KERNELS = {"conv1": 4, "conv2": 64, "conv3": 64, "conv4": 64, "conv5": 64, "conv6": 64}


def _elements(shape) -> int:
    return int(np.prod(shape))


def conv_ops(input_shape, kernels: int) -> int:
    """Multiply/adds of a conv layer by the paper's rule: input elements × kernels × 17."""
    return _elements(input_shape) * kernels * OPS_PER_CONV


@dataclass(frozen=True)
class ModelProfile:
    """Per-layer workload and data sizes of one inference task.

    Attributes
    ----------
    names : tuple of str, length L
    ops : np.ndarray, shape (L,)
        Floating-point multiply/add operations per layer.
    workload_cycles : np.ndarray, shape (L,)
        C^l = ops × ξ, CPU cycles per layer (Eq 1's numerator).
    output_bits : np.ndarray, shape (L,)
        O^l, bits of each layer's output (Eq 3's numerator).
    input_bits : float
        Bits of the raw input (3×64×64 values × 64 bits), sent if layer 1 runs off the source.
    """

    names: tuple
    ops: np.ndarray
    workload_cycles: np.ndarray
    output_bits: np.ndarray
    input_bits: float

    @property
    def num_layers(self) -> int:
        return len(self.names)

    @property
    def total_cycles(self) -> float:
        return float(self.workload_cycles.sum())

    def block_cycles(self, first: int, last: int) -> float:
        """C[u] = Σ_{x=first}^{last} C^x for a block of layers (0-based, inclusive)."""
        return float(self.workload_cycles[first : last + 1].sum())

    def data_bits_before(self, layer: int) -> float:
        """Bits that must reach the node running ``layer`` (0-based): its input."""
        return self.input_bits if layer == 0 else float(self.output_bits[layer - 1])


def paper_model(cycles_per_op: float = 10.0, conv3_rule: str = "rule") -> ModelProfile:
    """The 8-layer model of Sec 5.1 with ξ = ``cycles_per_op``.

    >>> m = paper_model()
    >>> int(m.workload_cycles[0])   # conv1: 3·64·64 · 4 kernels · 17 · ξ
    8355840
    """
    if conv3_rule not in ("rule", "printed"):
        raise ValueError(f"conv3_rule must be one of 'rule', 'printed', got {conv3_rule!r}")
    ops = []
    for idx, name in enumerate(LAYER_NAMES):
        in_shape = TENSOR_SHAPES[idx]
        if name == "transformer":
            ops.append(TRANSFORMER_OPS)
        elif name == "fc":
            # (64 + 63) multiply/adds per output (64 multiplies, 63 adds), 9 outputs
            n_in = _elements(in_shape)
            ops.append((n_in + n_in - 1) * TENSOR_SHAPES[-1][0])
        elif name == "conv3" and conv3_rule == "printed":
            ops.append(64 * 16 * 64 * OPS_PER_CONV)  # as printed in the paper
        else:
            ops.append(conv_ops(in_shape, KERNELS[name]))
    ops = np.asarray(ops, dtype=np.float64)
    output_bits = np.array(
        [_elements(s) * BITS_PER_VALUE for s in TENSOR_SHAPES[1:]], dtype=np.float64
    )
    return ModelProfile(
        names=LAYER_NAMES,
        ops=ops,
        workload_cycles=ops * float(cycles_per_op),
        output_bits=output_bits,
        input_bits=float(_elements(TENSOR_SHAPES[0]) * BITS_PER_VALUE),
    )


def profile_for(config) -> ModelProfile:
    """The profile a :class:`~dcicore.config.SystemConfig` describes."""
    return paper_model(config.cycles_per_op, config.conv3_rule)


def build_torch_model():
    """The same 8-layer model in PyTorch (lazy import; see :mod:`dcicore.torch_model`)."""
    from dcicore.torch_model import PaperNet

    return PaperNet()
