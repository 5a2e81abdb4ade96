"""The paper's 8-layer on-device model (Sec 5.1) in PyTorch, and its FLOPs as torch counts them.

Explained in the book's chapter "Edge inference and DNN partitioning", next to
:mod:`dcicore.profiles`, which holds the workload numbers the paper *uses*. This module builds
an actual network with the paper's tensor shapes so that a reader can run it, split it at any
layer, and compare the paper's operation counts with what PyTorch's own counter
(:class:`torch.utils.flop_counter.FlopCounterMode`) measures.

The network
-----------
Input (batch, 3, 64, 64); the shapes below leave out the batch dimension::

    input         3×64×64
    conv1         4×32×32   Conv2d(3→4,   3×3, stride 2, pad 1) + BatchNorm2d + ReLU
    conv2        64×16×16   Conv2d(4→64,  3×3, stride 2, pad 1) + BatchNorm2d + ReLU
    conv3        64×8×8     Conv2d(64→64, 3×3, stride 2, pad 1) + BatchNorm2d + ReLU
    transformer  64×8×8     64 tokens (the 8×8 positions) of dimension 64, see below
    conv4        64×4×4     Conv2d(64→64, 3×3, stride 2, pad 1) + BatchNorm2d + ReLU
    conv5        64×2×2     Conv2d(64→64, 3×3, stride 2, pad 1) + BatchNorm2d + ReLU
    conv6        64×1×1     Conv2d(64→64, 3×3, stride 2, pad 1) + BatchNorm2d + ReLU
    fc            9         Flatten + Linear(64→9)

The paper gives the kernel counts (4, then 64), says each conv is followed by batch
normalization and ReLU, and gives the tensor shapes; the 3×3 kernel follows from its "17
multiply/adds per convolution" (9 multiplies + 8 adds), and stride 2 with padding 1 is what
halves the spatial size at every conv. The convs carry no bias (the batch norm that follows
has its own shift), a common choice that changes no shape and no counted FLOP.

The transformer layer: our interpretation
-----------------------------------------
The paper says only: "4 attention units, each with 8 heads and a dimension of 32", and that
calflops counted 45.4164e6 multiply-adds for it. We read this as the usual code pattern
``Transformer(dim, depth, heads, dim_head, mlp_dim)`` (as in the widely used vit-pytorch
package):

* the 8×8 = 64 spatial positions of conv3's output are 64 *tokens*, each a 64-dim vector
  (its channels), plus a learned position embedding;
* "4 attention units" = ``depth`` 4: four pre-norm encoder blocks applied one after another,
  each with a residual connection around its attention and around its feed-forward part;
* "8 heads and a dimension of 32" = 8 heads of head dimension 32 per block, so queries, keys
  and values are projected 64 → 8·32 = 256 and the attention output is projected 256 → 64;
* the feed-forward width is **not stated** in the paper; we use the textbook ratio of 4× the
  token dimension, 64 → 256 → 64 with GELU (``ffn_dim=256``).

The output is reshaped back to 64×8×8, so the layer keeps the shape, as the paper says. All
four numbers are constructor arguments (``transformer_units``, ``heads``, ``head_dim``,
``ffn_dim``), and :func:`transformer_macs` gives the closed-form multiply-add count of any
choice, so the book can show how strongly the count depends on the reading. Examples (64
tokens of dimension 64; our default first)::

    reading                                                   MACs         / 45.4164e6
    4 blocks, 8 heads × 32, FFN 256 (our default)             33,554,432   0.739
    4 blocks, 8 heads × 32, no FFN                            25,165,824   0.554
    1 block, 4·8 = 32 heads × 32 side by side, FFN 2048       41,943,040   0.924
    4 blocks, 8 heads × 32, FFN 2048 (PyTorch's default)      92,274,688   2.03

None of these gives 45.4164e6 exactly, and we do not tune the unstated width to make it do
so: the profile (:mod:`dcicore.profiles`) keeps the paper's number, and this module reports
what the network as built actually costs.

Why torch's counts differ from the paper's rule
-----------------------------------------------
:func:`compare_with_paper` puts them side by side. Torch counts 2 FLOPs per multiply-add
(``torch_macs = flops / 2``). The differences, each predictable:

* **Conv layers.** The paper's rule is input elements × kernels × 17: one 3×3 window per
  *input* element, as if the conv had stride 1 and visited every input position. A stride-2
  3×3 conv actually computes out_elements × in_channels × 9 multiply-adds, i.e.
  (H/2·W/2·C_out) × C_in × 9 versus (C_in·H·W) × C_out × 17, a ratio of
  (1/4) × (9/17) = 9/68 ≈ 0.132 torch MACs per paper operation, the same for every conv
  layer. (Torch counts all 9 taps even where the window hangs over the zero padding, so conv6
  on a 2×2 input still counts 9 taps per output.) Part of the factor is a unit question: the
  paper's 17 counts multiplies and adds separately (a FLOP-like count), so FLOPs vs paper ops
  is 18/68 = 9/34 ≈ 0.265; the remaining 1/4 is the stride. With ``conv3_rule="printed"``
  conv3's paper value is 16× smaller, so its ratio is 16 × 9/68 = 36/17 ≈ 2.12.
* **FC.** Torch counts 64 × 9 = 576 multiply-adds; the paper's (64 + 63) × 9 = 1143 counts
  multiplies and adds separately, so the ratio is 64/127 ≈ 0.504 (the bias is not counted).
* **Not counted at all** by torch's counter: batch norm, ReLU/GELU, softmax, layer norm,
  residual additions, the position embedding and the attention scaling. The paper folds such
  work into ξ = 10 cycles per operation instead.
* **Transformer.** Only its matrix products are counted (projections, Q·Kᵀ, attention·V,
  feed-forward); the count depends on the interpretation above.

Torch is imported here at module level; :mod:`dcicore.profiles` imports this module lazily.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dcicore import profiles

__all__ = [
    "PaperNet",
    "TransformerLayer",
    "layer_modules",
    "layer_output_shapes",
    "count_layer_flops",
    "compare_with_paper",
    "transformer_macs",
]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 conv, stride 2, padding 1 (halves H and W), then BatchNorm2d and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=False),
    )


class _Attention(nn.Module):
    """Multi-head self-attention: ``heads`` heads of size ``head_dim`` on ``dim``-wide tokens.

    Written with explicit matrix products (not ``F.scaled_dot_product_attention``) so that
    every product is visible to the reader and to torch's FLOP counter.
    """

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)  # (B, n, dim) -> (B, n, 3·inner)
        self.to_out = nn.Linear(inner, dim)  # (B, n, inner) -> (B, n, dim)
        self.scale = head_dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(self.norm(x))
        # (B, n, 3·h·d) -> 3 × (B, h, n, d)
        q, k, v = qkv.reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, h, n, n)
        attn = scores.softmax(dim=-1)
        out = torch.matmul(attn, v)  # (B, h, n, d)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)  # (B, n, h·d)
        return self.to_out(out)


class _FeedForward(nn.Module):
    """Pre-norm position-wise MLP ``dim -> hidden -> dim`` with GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerLayer(nn.Module):
    """The paper's transformer layer on a (B, C, H, W) feature map; output shape = input shape.

    The H·W positions become tokens of dimension C (64 tokens of dimension 64 here), get a
    learned position embedding, pass through ``units`` pre-norm encoder blocks (attention with
    ``heads`` × ``head_dim``, then a feed-forward of width ``ffn_dim``; ``ffn_dim=0`` drops the
    feed-forward), and are reshaped back to (B, C, H, W). See the module docstring for why
    these defaults.
    """

    def __init__(
        self,
        channels: int = 64,
        tokens: int = 64,
        units: int = 4,
        heads: int = 8,
        head_dim: int = 32,
        ffn_dim: int = 256,
    ):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(1, tokens, channels))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.attn = nn.ModuleList([_Attention(channels, heads, head_dim) for _ in range(units)])
        self.ffn = nn.ModuleList(
            [
                _FeedForward(channels, ffn_dim) if ffn_dim > 0 else nn.Identity()
                for _ in range(units)
            ]
        )
        self.use_ffn = ffn_dim > 0
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H·W tokens, C)
        t = t + self.pos_embedding
        for attn, ffn in zip(self.attn, self.ffn):
            t = t + attn(t)
            if self.use_ffn:
                t = t + ffn(t)
        t = self.norm(t)
        return t.transpose(1, 2).reshape(b, c, h, w)  # back to (B, C, H, W)


class PaperNet(nn.Module):
    """The 8-layer on-device model of Sec 5.1: conv1–3, transformer, conv4–6, FC.

    Input (B, 3, 64, 64), output (B, 9). The attributes ``conv1`` … ``fc`` are the eight
    partitionable layers, named as :data:`dcicore.profiles.LAYER_NAMES`; running them in that
    order is :meth:`forward`. The transformer arguments are described in the module docstring.
    """

    def __init__(
        self,
        transformer_units: int = 4,
        heads: int = 8,
        head_dim: int = 32,
        ffn_dim: int = 256,
        num_outputs: int = 9,
    ):
        super().__init__()
        self.conv1 = _conv_block(3, 4)  # 3×64×64  -> 4×32×32
        self.conv2 = _conv_block(4, 64)  # 4×32×32  -> 64×16×16
        self.conv3 = _conv_block(64, 64)  # 64×16×16 -> 64×8×8
        self.transformer = TransformerLayer(  # 64×8×8  -> 64×8×8 (64 tokens of dim 64)
            channels=64,
            tokens=8 * 8,
            units=transformer_units,
            heads=heads,
            head_dim=head_dim,
            ffn_dim=ffn_dim,
        )
        self.conv4 = _conv_block(64, 64)  # 64×8×8 -> 64×4×4
        self.conv5 = _conv_block(64, 64)  # 64×4×4 -> 64×2×2
        self.conv6 = _conv_block(64, 64)  # 64×2×2 -> 64×1×1
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64, num_outputs))  # 64×1×1 -> 9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in layer_modules(self).values():
            x = module(x)
        return x


def layer_modules(model: PaperNet) -> dict[str, nn.Module]:
    """The eight layers of ``model`` in order, keyed by :data:`dcicore.profiles.LAYER_NAMES`.

    Running them one after another is the whole model, so splitting this dict at any point is
    a partition of the paper's kind.
    """
    return {name: getattr(model, name) for name in profiles.LAYER_NAMES}


def _example_input(batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *profiles.TENSOR_SHAPES[0])


def _per_layer(model: PaperNet | None, fn):
    """Run ``model`` (eval mode, no grad) layer by layer on a batch of 1; ``fn(name, module, x)``
    returns (output, value) and the values are collected by layer name."""
    model = PaperNet() if model is None else model
    was_training = model.training
    model.eval()  # batch norm in training mode rejects a batch of 1 at conv6's 1×1 output
    results = {}
    try:
        with torch.no_grad():
            x = _example_input()
            for name, module in layer_modules(model).items():
                x, results[name] = fn(name, module, x)
    finally:
        model.train(was_training)
    return results


def layer_output_shapes(model: PaperNet | None = None) -> list[tuple[int, ...]]:
    """Output shape of each layer (without the batch dimension), from a dummy input.

    Equals ``profiles.TENSOR_SHAPES[1:]`` for the paper's model.
    """
    shapes = _per_layer(model, lambda name, m, x: _shape_of(m, x))
    return list(shapes.values())


def _shape_of(module: nn.Module, x: torch.Tensor):
    y = module(x)
    return y, tuple(y.shape[1:])


def _flops_of(module: nn.Module, x: torch.Tensor):
    counter = FlopCounterMode(display=False)
    with counter:
        y = module(x)
    return y, int(counter.get_total_flops())


def count_layer_flops(model: PaperNet | None = None) -> dict[str, int]:
    """FLOPs of each layer as :class:`~torch.utils.flop_counter.FlopCounterMode` counts them.

    Each layer runs on its own input (the previous layer's output, batch of 1). Torch counts
    2 FLOPs per multiply-add and counts only matrix products and convolutions (no batch norm,
    activations, softmax, layer norm or additions).
    """
    return _per_layer(model, lambda name, m, x: _flops_of(m, x))


def transformer_macs(
    tokens: int = 64,
    dim: int = 64,
    units: int = 4,
    heads: int = 8,
    head_dim: int = 32,
    ffn_dim: int = 256,
) -> int:
    """Closed-form multiply-adds of :class:`TransformerLayer` (what torch's counter counts).

    Per unit, with n tokens of dimension d and inner width h·k:
    Q/K/V projections n·d·3hk, scores Q·Kᵀ n²·hk, attention·V n²·hk, output projection
    n·hk·d, feed-forward 2·n·d·ffn_dim.
    """
    inner = heads * head_dim
    attention = tokens * dim * 3 * inner + 2 * tokens * tokens * inner + tokens * inner * dim
    ffn = 2 * tokens * dim * ffn_dim
    return units * (attention + ffn)


def compare_with_paper(
    cycles_per_op: float = 10.0, conv3_rule: str = "rule", model: PaperNet | None = None
) -> list[dict]:
    """Paper operation counts next to torch's, one row per layer.

    Each row: ``layer``; ``paper_ops`` (multiply/adds, ``profiles.paper_model().ops``);
    ``paper_cycles`` (C = paper_ops × ξ); ``torch_flops``; ``torch_macs`` (= flops / 2) and
    ``ratio`` = torch_macs / paper_ops. See the module docstring for why the ratio is 9/68 for
    every conv layer, 64/127 for the FC layer, and interpretation-dependent for the transformer.
    """
    paper = profiles.paper_model(cycles_per_op, conv3_rule)
    flops = count_layer_flops(model)
    rows = []
    for i, name in enumerate(paper.names):
        torch_macs = flops[name] / 2
        paper_ops = float(paper.ops[i])
        rows.append(
            {
                "layer": name,
                "paper_ops": paper_ops,
                "paper_cycles": float(paper.workload_cycles[i]),
                "torch_flops": flops[name],
                "torch_macs": torch_macs,
                "ratio": torch_macs / paper_ops,
            }
        )
    return rows
