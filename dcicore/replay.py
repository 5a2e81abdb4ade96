"""Replay buffer of compact transitions. Interface stub."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ReplayBuffer", "Transitions"]


@dataclass
class Transitions:
    """A sampled minibatch: graphs of s and s', actions (B,M,4) long, rewards (B,) float
    (unscaled), dones (B,) float, ready (B,M) bool, masks / next_masks (as masks_to_tensors)."""

    graph: object
    next_graph: object
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    ready: torch.Tensor
    masks: object
    next_masks: object


class ReplayBuffer:
    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)

    def add(self, obs, action, reward, next_obs, done, masks, next_masks) -> None:
        raise NotImplementedError

    def sample(self, n: int, rng=None) -> Transitions:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError
