"""The network of the sEH binding proxy (Bengio et al. 2021, GFlowNet molecule experiments),
re-implemented; `rlx.envs.seh_proxy` turns molecules into its atom graphs and scores them.

* h0 = LeakyReLU(W0 x); 12 rounds of m = LeakyReLU(NNConv_mean(h) ) (edge network
  4 -> 128 -> LeakyReLU -> 64 x 64, plus a root weight and bias), h = GRU(m, h);
* Set2Set readout (3 LSTM steps) and a linear layer 128 -> 1.
Weights: `seh_proxy_params.npz` (arrays p00..p21 in the original parameter order), read with
numpy, no pickle. The root weight p02 is applied as h @ p02^T, the layout of the authors'
later loader (and of the code behind the published sEH numbers); `root_transposed=True`
gives h @ p02 (the older torch-geometric layout) instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from rlx import kernels

__all__ = ["SHAPES", "SEHProxyNet", "load_params"]

SHAPES = [(64, 71), (64,), (64, 64), (64,), (128, 4), (128,), (4096, 128), (4096,), (192, 64), (192, 64), (192,),
          (192,), (512, 64), (512,), (105, 512), (105,), (256, 128), (256, 64), (256,), (256,), (1, 128), (1,)]

def load_params(path: str | Path) -> list[np.ndarray]:
    """The 22 weight arrays p00..p21 of `seh_proxy_params.npz` (numpy, no pickle), shape-checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sEH proxy weights {path} not found (seh_proxy_params.npz)")
    with np.load(path, allow_pickle=False) as data:
        names = [f"p{i:02d}" for i in range(len(SHAPES))]
        missing = [n for n in names if n not in data.files]
        if missing:
            raise ValueError(f"sEH proxy weights {path}: missing arrays {missing}")
        try:
            params = [data[n] for n in names]
        except ValueError as e:  # object arrays need pickle: refused, never unpickled
            from rlx.core.errors import UnsafeFileError

            raise UnsafeFileError(f"refusing to load {path}: {e}; the proxy weights are plain numeric arrays") from None
    bad = [(n, a.shape, s) for n, a, s in zip(names, params, SHAPES) if tuple(a.shape) != s]
    if bad:
        raise ValueError(f"sEH proxy weights {path}: unexpected shapes {bad[:3]} (name, got, expected)")
    return params


class SEHProxyNet:
    """The proxy's MPNN on a batched atom graph (float64, no gradients: fixed published weights).
    `net(x [V, 71], edge_index [2, E], edge_attr [E, 4], ptr [B+1]) -> scores [B]`."""

    def __init__(self, params: list[np.ndarray], root_transposed: bool = False, steps: int = 12):
        p = [torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in params]
        self.w0, self.b0 = p[0], p[1]
        self.root = p[2] if root_transposed else p[2].T  # [in, out]: h @ root
        self.conv_bias, self.e1, self.eb1, self.e2, self.eb2 = p[3], p[4], p[5], p[6], p[7]
        self.gru = p[8:12]  # weight_ih, weight_hh, bias_ih, bias_hh (gates r, z, n)
        self.lstm = p[16:20]
        self.w_out, self.b_out = p[20], p[21]
        self.steps = steps

    @torch.no_grad()
    def __call__(self, x, edge_index, edge_attr, ptr) -> torch.Tensor:
        V, d = x.shape[0], self.w0.shape[0]
        h = F.leaky_relu(x @ self.w0.T + self.b0)  # [V, 64]
        src, dst = edge_index
        # the edge network only ever sees a few distinct bond features: one 64 x 64 matrix per kind
        kinds, kind = torch.unique(edge_attr, dim=0, return_inverse=True)
        w_kind = (F.leaky_relu(kinds @ self.e1.T + self.eb1) @ self.e2.T + self.eb2).view(-1, d, d)  # [U, in, out]
        groups = [(torch.nonzero(kind == u).squeeze(-1), w_kind[u]) for u in range(kinds.shape[0])]
        deg = torch.zeros(V, dtype=x.dtype).index_add_(0, dst, torch.ones_like(dst, dtype=x.dtype)).clamp_min(1)
        for _ in range(self.steps):
            agg = torch.zeros_like(h)
            for e, w in groups:  # messages h_src @ W(e), summed per target, then averaged
                agg.index_add_(0, dst[e], h[src[e]] @ w)
            agg = agg / deg[:, None]  # mean over incoming edges
            m = F.leaky_relu(agg + h @ self.root + self.conv_bias)
            h = _gru_cell(m, h, *self.gru)
        return self._set2set(h, ptr) @ self.w_out[0] + self.b_out[0]  # [B]

    def _set2set(self, h: torch.Tensor, ptr: torch.Tensor, steps: int = 3) -> torch.Tensor:
        """Set2Set (Vinyals et al. 2016): q_t = LSTM(q*_{t-1}); a = softmax_nodes(h . q_t);
        r = sum a h; q*_t = [q_t, r]. Returns q* [B, 128]."""
        B, d = ptr.numel() - 1, h.shape[1]
        seg = kernels.ptr_to_segment_ids(ptr, h.shape[0])
        q_star, hx, cx = h.new_zeros(B, 2 * d), h.new_zeros(B, d), h.new_zeros(B, d)
        w_ih, w_hh, b_ih, b_hh = self.lstm
        for _ in range(steps):
            gates = q_star @ w_ih.T + b_ih + hx @ w_hh.T + b_hh  # [B, 4d]: input, forget, cell, output
            i, f, g, o = gates.chunk(4, 1)
            cx = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
            hx = torch.sigmoid(o) * torch.tanh(cx)
            attn = kernels.segment_log_softmax((h * hx[seg]).sum(1), ptr).exp()  # [V]
            r = kernels.segment_sum(attn[:, None] * h, ptr)  # [B, d]
            q_star = torch.cat([hx, r], 1)
        return q_star


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.GRU's update (gates in the order reset, update, new)."""
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    ir, iz, inn = gi.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return (1 - z) * n + z * h
