"""Fitness of a whole population of Q-networks: the negative TD error of Eq 14.

Explained in the book's chapter "CERL: evolution meets Q-learning"; used by :mod:`dcicore.cem`
and :mod:`dcicore.cerl`.

An individual is a pair (θ_i, θ'_i): a Q-network and its target network, each a flat parameter
vector of the template network's architecture (:func:`flatten_params`). Its fitness, to be
**maximised**, is

    f(θ_i, θ'_i) = −(1/J) Σ_j ( r_j·scale + γ (1 − done_j) max_a' Q_θ'i(s'_j, a') − Q_θi(s_j, a_j) )²

over J transitions sampled from the replay buffer (Eq 14): the max uses the next state's action
masks, ``done`` stops the bootstrap, and Q of a joint action is V(s) plus the sum over ready
tasks of the branch mean (the additive joint value of :class:`~dcicore.nets.GCNQNetwork`).

**Batch norm.** Fitness uses evaluation mode: every individual normalises with the template's
running statistics (the individuals evolve the BN scale and shift, not the statistics), so an
individual's fitness depends only on its parameters and the sample, never on the other
individuals or on the order of evaluation.

Two implementations: :func:`td_fitness` evaluates all k individuals together (the parameters
stacked along a leading dimension; Â_norm X is computed once and shared; one sparse product
per layer aggregates every individual's features; the last layer and the heads only at the
rows the heads read: for Q(s, a) the chosen node, block end and levels only, see
:func:`dcicore.nets.chosen_q`); :func:`td_fitness_loop` is the plain reference, a Python loop that loads
each individual into a network and runs the torch-geometric path. A test checks they agree.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dcicore.nets import (
    branch_values,
    chosen_q,
    compact_actions,
    compact_masks,
    max_q,
    max_q_compact,
    q_of_actions,
)

__all__ = [
    "flatten_params",
    "unflatten_into",
    "num_params",
    "stack_params",
    "td_fitness",
    "td_fitness_loop",
]


def num_params(net: nn.Module) -> int:
    """P, the number of parameters (the length of an individual's vector)."""
    return sum(p.numel() for p in net.parameters())


def flatten_params(net: nn.Module) -> torch.Tensor:
    """All parameters of ``net`` in ``named_parameters`` order as one (P,) float32 vector (a copy).

    Buffers (batch-norm running statistics) are not parameters and are not included.
    """
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()


def unflatten_into(net: nn.Module, vec: torch.Tensor) -> None:
    """Copy a (P,) vector into ``net``'s parameters (the inverse of :func:`flatten_params`)."""
    vec = torch.as_tensor(vec)
    if vec.dim() != 1 or vec.numel() != num_params(net):
        raise ValueError(f"vec must have shape ({num_params(net)},), got {tuple(vec.shape)}")
    off = 0
    with torch.no_grad():
        for p in net.parameters():
            n = p.numel()
            p.copy_(vec[off:off + n].view_as(p))
            off += n


def stack_params(net: nn.Module, thetas: torch.Tensor) -> dict:
    """(k, P) parameter vectors -> {name: (k, *shape)} views, the input of
    :func:`dcicore.nets.branch_values`."""
    thetas = torch.as_tensor(thetas, dtype=torch.float32)
    if thetas.dim() == 1:
        thetas = thetas[None]
    if thetas.shape[1] != num_params(net):
        raise ValueError(f"thetas must have shape (k, {num_params(net)}), got {tuple(thetas.shape)}")
    out, off = {}, 0
    for name, p in net.named_parameters():
        n = p.numel()
        out[name] = thetas[:, off:off + n].view(thetas.shape[0], *p.shape)
        off += n
    return out


def _chunk_size(graph, k: int, budget_bytes: float = 1.5e8) -> int:
    """Individuals per chunk so that the widest activations stay within ``budget_bytes``."""
    per = graph.num_rows * 4 * (64 + 128) * 3  # a few (R, 64/128) float tensors per individual
    return max(1, min(k, int(budget_bytes // max(per, 1))))


def td_fitness(q_net_template, thetas, target_thetas, transitions, gamma: float,
               reward_scale: float, chunk: int | None = None) -> torch.Tensor:
    """Fitness of Eq 14 of k individuals, (k,), all evaluated together (fast path).

    ``q_net_template``: a :class:`~dcicore.nets.GCNQNetwork` giving the architecture and the
    batch-norm statistics; ``thetas``/``target_thetas``: (k, P); ``transitions``: a
    :class:`~dcicore.replay.Transitions` of J transitions; rewards are multiplied by
    ``reward_scale`` (the agents learn on scaled rewards). ``chunk`` individuals are evaluated at
    a time (default: as many as fit in ~150 MB of activations).
    """
    net = q_net_template
    thetas = torch.as_tensor(thetas, dtype=torch.float32)
    target_thetas = torch.as_tensor(target_thetas, dtype=torch.float32)
    if thetas.shape != target_thetas.shape:
        raise ValueError(f"thetas {tuple(thetas.shape)} and target_thetas {tuple(target_thetas.shape)} differ")
    g, g2 = transitions.graph, transitions.next_graph
    k = thetas.shape[0]
    actions_c = compact_actions(transitions.actions, g)
    masks_c = compact_masks(transitions.next_masks, g2)
    r = transitions.rewards.float() * reward_scale  # (J,)
    notdone = 1.0 - transitions.dones.float()
    chunk = chunk or _chunk_size(g, k)
    out = []
    with torch.inference_mode():
        for lo in range(0, k, chunk):
            p = stack_params(net, thetas[lo:lo + chunk])
            pt = stack_params(net, target_thetas[lo:lo + chunk])
            q_sa = chosen_q(net, p, g, actions_c)  # (c, J), only what the actions read
            q_next = max_q_compact(branch_values(net, pt, g2), masks_c, g2)  # (c, J)
            td = r + gamma * notdone * q_next - q_sa
            out.append(-(td**2).mean(1))
    return torch.cat(out)


def td_fitness_loop(q_net_template, thetas, target_thetas, transitions, gamma: float,
                    reward_scale: float) -> torch.Tensor:
    """The plain reference of :func:`td_fitness`: one individual at a time, torch-geometric GCN."""
    thetas = torch.as_tensor(thetas, dtype=torch.float32)
    target_thetas = torch.as_tensor(target_thetas, dtype=torch.float32)
    q_net = copy.deepcopy(q_net_template).eval()
    target_net = copy.deepcopy(q_net_template).eval()
    r = transitions.rewards.float() * reward_scale
    notdone = 1.0 - transitions.dones.float()
    fit = []
    with torch.no_grad():
        for theta, theta_t in zip(thetas, target_thetas):
            unflatten_into(q_net, theta)
            unflatten_into(target_net, theta_t)
            q_sa = q_of_actions(q_net.forward_reference(transitions.graph), transitions.actions,
                                transitions.graph.ready)
            q_next = max_q(target_net.forward_reference(transitions.next_graph), transitions.next_masks)
            td = r + gamma * notdone * q_next - q_sa
            fit.append(-(td**2).mean())
    return torch.stack(fit)
