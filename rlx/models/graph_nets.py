"""Message-passing encoders (torch-geometric) and a graph policy over ragged action sets.

* `GINEEncoder`: GINE (Hu et al. 2020, "Strategies for Pre-training GNNs", eq. 2.2):
  h_v <- MLP((1 + eps) h_v + sum_u ReLU(h_u + e_uv)), with residual connections.
* `NNConvGRUEncoder`: the MPNN of Gilmer et al. 2017 (section 5): edge-conditioned
  convolution m_v = mean_u A(e_uv) h_u with A an MLP of the edge features, then
  h_v <- GRU(m_v, h_v); the encoder of the original GFlowNet molecule experiments.
* `FragmentPolicy`: the same over a fragment env's block graph (per open stem: one logit per
  fragment of the library).
* `GraphPolicy`: per-graph logits (stop, first atom, log F(s)), per-node logits (add an atom
  of each type to that node) and per-pair logits (bond between two nodes), written into the
  env's ragged layout (`env.graph_batch(states)` gives the flat positions). The caller
  turns them into a categorical over ragged action sets (`rlx.core.nets.SegmentCategorical`).

Imported only by graph-based envs' users (torch-geometric is imported at the top).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn
from torch_geometric.nn import GINEConv, NNConv

from rlx import kernels
from rlx.core.checkpoint import Saveable

NUM_BOND_TYPES = 4  # bond order 0..3 (0 never appears on an edge but keeps indices simple)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class GINEEncoder(nn.Module):
    def __init__(self, num_node_types: int, hidden: int, num_layers: int, num_edge_types: int = NUM_BOND_TYPES):
        super().__init__()
        self.node_emb = nn.Embedding(num_node_types, hidden)
        self.edge_emb = nn.Embedding(num_edge_types, hidden)
        self.convs = nn.ModuleList(GINEConv(_mlp(hidden, hidden, hidden), train_eps=True) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        h, e = self.node_emb(x), self.edge_emb(edge_attr)
        for conv, norm in zip(self.convs, self.norms):
            h = h + torch.relu(norm(conv(h, edge_index, e)))
        return h  # [V, hidden]


class NNConvGRUEncoder(nn.Module):
    def __init__(self, num_node_types: int, hidden: int, num_layers: int, num_edge_types: int = NUM_BOND_TYPES):
        super().__init__()
        self.node_emb = nn.Embedding(num_node_types, hidden)
        self.edge_emb = nn.Embedding(num_edge_types, 16)
        self.conv = NNConv(hidden, hidden, _mlp(16, 64, hidden * hidden), aggr="mean")
        self.gru = nn.GRU(hidden, hidden)
        self.num_layers = num_layers

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        h = self.node_emb(x)
        e = self.edge_emb(edge_attr)
        state = h[None]  # [1, V, hidden] GRU hidden state
        for _ in range(self.num_layers):  # weights shared across rounds, as in Gilmer et al.
            m = torch.relu(self.conv(h, edge_index, e))
            h, state = self.gru(m[None], state)
            h = h[0]
        return h  # [V, hidden]


ENCODERS = {"gine": GINEEncoder, "nnconv": NNConvGRUEncoder}


class GraphPolicy(Saveable, nn.Module):
    """Forward logits in the env's ragged action layout [K] and log F(s) [B] for a batch of
    graph states. With `value_head=True` it also gives V(s) [B] (for PPO baselines)."""

    def __init__(self, env, hidden: int = 64, num_layers: int = 3, encoder: str = "gine"):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}")
        self.env, T = env, env.T
        self.encoder = ENCODERS[encoder](T, hidden, num_layers)
        self.graph_head = _mlp(2 * hidden + 1, hidden, 1 + T + 2)  # stop, first atom x T, log F, value
        self.node_head = _mlp(hidden, hidden, T)
        self.pair_head = _mlp(2 * hidden, hidden, 1)

    def embed(self, states: TensorDict) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        gb = self.env.graph_batch(states)
        h = self.encoder(gb["x"], gb["edge_index"], gb["edge_attr"]) if gb["x"].numel() else \
            self.encoder.node_emb.weight.new_zeros(0, self.node_head[0].in_features)
        pooled = torch.cat([kernels.segment_mean(h, gb["node_ptr"]), kernels.segment_sum(h, gb["node_ptr"]) / self.env.N,
                            gb["num_atoms"][:, None].float() / self.env.N], 1)  # [B, 2h + 1]
        return gb, h, self.graph_head(pooled)

    def forward(self, states: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        gb, h, g = self.embed(states)
        T = self.env.T
        logits = g.new_zeros(int(gb["act_ptr"][-1]))
        start = gb["act_ptr"][:-1]
        logits = logits.index_put((start[:, None] + torch.arange(1 + T),), g[:, : 1 + T])  # stop, first atom
        logits = logits.index_put((gb["add_pos"],), self.node_head(h))  # [V, T]
        hs, hd = h[gb["pair_src"]], h[gb["pair_dst"]]
        pair = self.pair_head(torch.cat([hs + hd, hs * hd], 1)).squeeze(-1)  # symmetric in (i, j)
        logits = logits.index_put((gb["pair_pos"],), pair)
        return logits, g[:, 1 + T]

    def value(self, states: TensorDict) -> torch.Tensor:
        return self.embed(states)[2][:, 2 + self.env.T]


class FragmentPolicy(Saveable, nn.Module):
    """Policy over a fragment env's block graph (`rlx.envs.fragments`): nodes are fragments,
    edges junctions typed by the stem they use. Per-graph head (mean and sum pooling, fragment
    count): stop, L first-fragment logits, log F(s), V(s); per open stem: MLP([h_block, stem
    embedding]) gives L attach logits. Same interface as `GraphPolicy`."""

    def __init__(self, env, hidden: int = 64, num_layers: int = 3, encoder: str = "gine"):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}")
        self.env, L = env, env.L
        self.encoder = ENCODERS[encoder](L, hidden, num_layers, env.num_stem_types)
        self.stem_emb = nn.Embedding(env.num_stem_types, hidden)
        self.graph_head = _mlp(2 * hidden + 1, hidden, 1 + L + 2)  # stop, first fragment x L, log F, value
        self.stem_head = _mlp(2 * hidden, hidden, L)

    def embed(self, states: TensorDict) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        gb = self.env.graph_batch(states)
        h = self.encoder(gb["x"], gb["edge_index"], gb["edge_attr"]) if gb["x"].numel() else \
            self.stem_emb.weight.new_zeros(0, self.stem_emb.embedding_dim)
        pooled = torch.cat([kernels.segment_mean(h, gb["node_ptr"]), kernels.segment_sum(h, gb["node_ptr"]) / self.env.Nb,
                            gb["num_blocks"][:, None].float() / self.env.Nb], 1)  # [B, 2h + 1]
        return gb, h, self.graph_head(pooled)

    def forward(self, states: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        gb, h, g = self.embed(states)
        L = self.env.L
        start = gb["act_ptr"][:-1]
        logits = g.new_zeros(int(gb["act_ptr"][-1])).index_put((start,), g[:, 0])  # stop
        empty = torch.nonzero(gb["empty"]).squeeze(-1)
        logits = logits.index_put((start[empty, None] + 1 + torch.arange(L),), g[empty, 1 : 1 + L])  # first fragment
        stems = self.stem_head(torch.cat([h[gb["stem_node"]], self.stem_emb(gb["stem_type"])], 1))  # [S, L]
        logits = logits.index_put((gb["stem_pos"][:, None] + torch.arange(L),), stems)
        return logits, g[:, 1 + L]

    def value(self, states: TensorDict) -> torch.Tensor:
        return self.embed(states)[2][:, 2 + self.env.L]


def graph_policy(env, hidden: int = 64, num_layers: int = 3, encoder: str = "gine") -> nn.Module:
    """The MPNN policy for a graph env: `FragmentPolicy` for fragment envs, else `GraphPolicy`."""
    cls = FragmentPolicy if env.policy_input == "fragment_graph" else GraphPolicy
    return cls(env, hidden, num_layers, encoder)


__all__ = ["GINEEncoder", "NNConvGRUEncoder", "GraphPolicy", "FragmentPolicy", "graph_policy", "ENCODERS"]
