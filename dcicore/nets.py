"""GCN Q-network with action-branching heads (Eqs 11, 16). Interface stub."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import torch
from torch import nn

from dcicore.config import SystemConfig

__all__ = ["BranchQ", "GCNQNetwork", "masks_to_tensors", "greedy_action", "q_of_actions",
           "max_q", "q_at_argmax"]

BranchQ = namedtuple("BranchQ", ["node", "block", "share", "carrier"])
"""Branch Q-values: node (B,M,N+1), block (B,M,L), share (B,M,share_levels), carrier (B,M,S)."""


class GCNQNetwork(nn.Module):
    """Three GCN layers + ReLU + BatchNorm, then branching heads (stub)."""

    def __init__(self, config: SystemConfig, hidden=(64, 128, 256), dueling=False):
        super().__init__()
        self.config = config
        self.hidden = tuple(hidden)
        self.dueling = bool(dueling)

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def forward(self, graph) -> BranchQ:
        raise NotImplementedError


def masks_to_tensors(masks_list):
    """List of env.action_masks() dicts -> BranchQ of bool tensors (B,M,·) plus ready; see module."""
    raise NotImplementedError


def greedy_action(branch_q: BranchQ, masks) -> np.ndarray:
    """(M,4) int64 env action of the masked argmax of every branch (B must be 1)."""
    raise NotImplementedError


def q_of_actions(branch_q: BranchQ, actions: torch.Tensor, ready: torch.Tensor) -> torch.Tensor:
    """Q(s,a), (B,): mean over branches and ready tasks of the chosen branch values."""
    raise NotImplementedError


def max_q(branch_q: BranchQ, masks) -> torch.Tensor:
    """max_a Q(s,a), (B,)."""
    raise NotImplementedError


def q_at_argmax(branch_q_target: BranchQ, branch_q_online: BranchQ, masks) -> torch.Tensor:
    """Double DQN: target values at the online net's masked argmax, (B,)."""
    raise NotImplementedError
