"""Observation -> graph tensors (the state graph S = (V_α, V_β, E_α, E_β, E_αβ) of Sec 3.1).

Explained in the book's chapter "The graph state and the GCN Q-network".
(Interface stub: implementation in progress.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GraphBatch", "obs_to_graph", "collate", "NUM_FEATURES"]

NUM_FEATURES = 16
"""Width of the node feature matrix X: 6 compute-node features, 8 task-layer features, 2 type flags."""


@dataclass
class GraphBatch:
    """B state graphs of one config, in the two forms the network reads.

    Fast form (compact, live rows only: the N+1 compute nodes and the L layers of every task that
    exists; empty task-table rows are not part of the paper's graph):
      ``x`` (R, 16) node features, ``adj`` (R, R) sparse CSR D̂^-1/2 Â D̂^-1/2 (Eq 11),
      ``node_rows`` (B, N+1), ``task_rows`` (B, M, L) (-1 for empty rows), ``next_rows`` (B, M)
      (-1 where the task is not ready), ``ready`` (B, M) bool.
    Reference form: :meth:`pyg` returns a torch-geometric ``Batch`` of the full padded graphs
    (V = (N+1) + M·L nodes each).
    """

    num_graphs: int
    num_nodes: int
    num_tasks: int
    num_layers: int
    x: torch.Tensor
    adj: torch.Tensor
    node_rows: torch.Tensor
    task_rows: torch.Tensor
    next_rows: torch.Tensor
    ready: torch.Tensor

    def pyg(self):
        """torch-geometric ``Batch`` of the full graphs (reference path)."""
        raise NotImplementedError


def obs_to_graph(obs: dict) -> GraphBatch:
    """One observation (the env's Dict) -> a GraphBatch with B = 1."""
    raise NotImplementedError


def collate(list_of_obs) -> GraphBatch:
    """B observations of the same config -> one GraphBatch."""
    raise NotImplementedError
