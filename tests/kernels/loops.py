"""Naive per-element Python references for the kernel tests (float64, no vectorization)."""

import math

import torch

INF = math.inf


def gae(r, v, nv, term, trunc, gamma, lam):
    T, N = r.shape
    adv = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if term[t, n] else gamma * float(nv[t, n])
            delta = float(r[t, n]) + bootstrap - float(v[t, n])
            cont = 0.0 if (term[t, n] or trunc[t, n]) else 1.0
            running = delta + gamma * lam * cont * running
            adv[t, n] = running
    return adv, adv + v.double()


def lambda_returns(r, nv, term, trunc, gamma, lam):
    T, N = r.shape
    out = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        nxt = None
        for t in reversed(range(T)):
            done = bool(term[t, n]) or bool(trunc[t, n])
            tail = float(nv[t, n]) if (done or t == T - 1) else nxt
            g = float(r[t, n])
            if not term[t, n]:
                g += gamma * ((1 - lam) * float(nv[t, n]) + lam * tail)
            out[t, n] = nxt = g
    return out


def discount_cumsum(x, gamma, valid):
    T, N = x.shape
    out = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            running = float(x[t, n]) + gamma * running if valid[t, n] else 0.0
            out[t, n] = running
    return out


def _columns(x):
    return x.double().reshape(x.shape[0], math.prod(x.shape[1:]))  # [M, F]


def segment_reduce(x, ptr, op):
    """op in sum, mean, max, logsumexp; x [M] or [M, F]."""
    cols = _columns(x)
    E, F = len(ptr) - 1, cols.shape[1]
    out = torch.zeros(E, F, dtype=torch.float64)
    for e in range(E):
        for f in range(F):
            vals = [float(cols[i, f]) for i in range(int(ptr[e]), int(ptr[e + 1]))]
            if op == "sum":
                out[e, f] = sum(vals)
            elif op == "mean":
                out[e, f] = sum(vals) / len(vals) if vals else 0.0
            elif op == "max":
                out[e, f] = max(vals, default=-INF)
            else:
                top = max(vals, default=-INF)
                out[e, f] = -INF if top == -INF else top + math.log(sum(math.exp(a - top) for a in vals))
    return out.view(E, *x.shape[1:])


def segment_log_softmax(x, ptr):
    cols = _columns(x)
    lse = _columns(segment_reduce(x, ptr, "logsumexp"))
    out = torch.zeros_like(cols)
    for e in range(len(ptr) - 1):
        for i in range(int(ptr[e]), int(ptr[e + 1])):
            for f in range(cols.shape[1]):
                a, s = float(cols[i, f]), float(lse[e, f])
                out[i, f] = -INF if a == -INF else a - s
    return out.view(x.shape)


def scatter_add(src, index, dim_size):
    cols = _columns(src)
    out = torch.zeros(dim_size, cols.shape[1], dtype=torch.float64)
    for k in range(cols.shape[0]):
        for f in range(cols.shape[1]):
            out[int(index[k]), f] += float(cols[k, f])
    return out.view(dim_size, *src.shape[1:])


def ragged_ptr(gen, E, max_len, huge=0):
    """Random CSR offsets over E segments with lengths in [0, max_len] (zeros included),
    plus one segment of `huge` rows in the middle when huge > 0."""
    lengths = torch.randint(0, max_len + 1, (E,), generator=gen)
    lengths[0] = 0
    if huge:
        lengths[E // 2] = huge
    ptr = torch.zeros(E + 1, dtype=torch.int64)
    ptr[1:] = lengths.cumsum(0)
    return ptr
