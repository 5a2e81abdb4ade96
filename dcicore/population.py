"""Fitness of a population of Q-networks (Eq 14), vectorized and reference. Interface stub."""

from __future__ import annotations

import torch

__all__ = ["flatten_params", "unflatten_into", "num_params", "td_fitness", "td_fitness_loop"]


def flatten_params(net) -> torch.Tensor:
    raise NotImplementedError


def unflatten_into(net, vec) -> None:
    raise NotImplementedError


def num_params(net) -> int:
    raise NotImplementedError


def td_fitness(q_net_template, thetas, target_thetas, transitions, gamma, reward_scale) -> torch.Tensor:
    """(k,) fitness −E[(r·scale + γ(1−done) max_a' Q_θ'i(s',a') − Q_θi(s,a))²] (Eq 14), maximised."""
    raise NotImplementedError


def td_fitness_loop(q_net_template, thetas, target_thetas, transitions, gamma, reward_scale) -> torch.Tensor:
    raise NotImplementedError
