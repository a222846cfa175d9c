"""A minimal standalone IQL (Kostrikov, Nair, Levine 2022, arXiv:2110.06169), written from the
paper's equations, to check rlx's `algo=iql` (issue 17). It imports nothing from rlx: a D4RL-format
HDF5 file is read with h5py, the policy is evaluated in gymnasium.

Paper, Algorithm 1 and appendix B (locomotion settings):
* V:  L_V = E_D[ L2^tau(min_i Q_target_i(s, a) - V(s)) ],  L2^tau(u) = |tau - 1(u < 0)| u^2, tau = 0.7 (eq. 5)
* Q:  L_Q = E_D[ (r + gamma (1 - done) V(s') - Q_i(s, a))^2 ]  for both twins (eq. 6), gamma = 0.99
* target Q: Polyak, rate 0.005
* policy: max E_D[ exp(beta (Q_target(s, a) - V(s))) log pi(a|s) ], weights clipped at 100, beta = 3 (eq. 7)
* Adam 3e-4 everywhere, batch 256, two hidden layers of 256 ReLU units, cosine decay of the actor's
  learning rate; rewards scaled by 1000 / (max - min episode return).
* pi: Gaussian, mean tanh(MLP(s)), state-independent log std.
Per step the order is V, then Q (on the new V), then the policy (on the new V), then the target.

Every `--log-every` steps it logs (one JSON line to stdout and `--out`) diagnostics of the advantage
weights on a fixed sample of dataset rows (`--diag-rows`): quantiles of A = min Q_target - V and of
exp(beta A), the fraction clipped, the effective sample size (sum w)^2 / sum w^2 of 256-row batches as a
fraction of 256, where the weight sits relative to the episodes' ends (rows within 10 steps of a
termination), the actor's std, and the policy's mean actions against the data's.

    python scripts/iql_reference.py --data $RLX_DATA/hopper-sac-medium.hdf5 --env Hopper-v5 \
        --steps 8000 --hidden 128 128 --seed 0 --out /tmp/iqlref.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn

D4RL_REF = {"Hopper": (-20.272305, 3234.3), "HalfCheetah": (-280.178953, 12135.0), "Walker2d": (1.629008, 4592.3)}


def load(path: str) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as h:
        d = {k: np.asarray(h[k]) for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    d["terminals"] = d["terminals"].astype(bool)
    d["timeouts"] = d["timeouts"].astype(bool) & ~d["terminals"]
    return d


def episodes(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Episode id of each row, the rows' distance to their episode's last row and from its first,
    and whether their episode ended by termination (the last row of the file closes an episode)."""
    end = d["terminals"] | d["timeouts"]
    end[-1] = True
    ep = np.concatenate([[0], np.cumsum(end[:-1])])
    last = np.nonzero(end)[0]
    first = np.concatenate([[0], last[:-1] + 1])
    return ep, last[ep] - np.arange(len(end)), np.arange(len(end)) - first[ep], d["terminals"][last][ep]


def mlp(i: int, o: int, hidden: list[int]) -> nn.Sequential:
    layers, dims = [], [i, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], o))


class Policy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], log_std_min: float):
        super().__init__()
        self.mu, self.log_std = mlp(obs_dim, act_dim, hidden), nn.Parameter(torch.zeros(act_dim))
        self.log_std_min = log_std_min

    def mean(self, s):
        return torch.tanh(self.mu(s))

    def log_prob(self, s, a):
        log_std = self.log_std.clamp(self.log_std_min, 2.0)
        z = (a - self.mean(s)) / log_std.exp()
        return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def jsonl_emitter(path):
    """A function printing each record as one JSON line and appending it to `path` (if given)."""
    out = open(path, "a") if path else None

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    return emit


def weight_stats(adv: torch.Tensor, beta: float, clip: float, batch: int, near_fall: torch.Tensor,
                 near_start: torch.Tensor, mu: torch.Tensor, act: torch.Tensor, log_std: torch.Tensor) -> dict:
    """The AWR weights w = min(exp(beta A), clip) of a sample of rows: quantiles of A and w, the
    fraction clipped, the effective sample size (sum w)^2 / sum w^2 of consecutive `batch`-row
    slices as a fraction of `batch`, the weight share of the rows within 10 steps of a termination
    (`near_fall`) and of the first 20 rows of the episodes (`near_start`), the policy's std, and its mean actions `mu` against the data's `act`."""
    w = torch.exp(beta * adv).clamp(max=clip)
    wb = w[: (len(w) // batch) * batch].reshape(-1, batch)
    ess = wb.sum(1) ** 2 / (wb ** 2).sum(1) / batch
    qs = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99])
    return {"adv_q": [round(float(x), 3) for x in torch.quantile(adv, qs)],
            "adv_std": float(adv.std()),
            "w_q": [round(float(x), 3) for x in torch.quantile(w, qs)],
            "frac_clipped": float((w >= clip).float().mean()),
            "ess_frac_mean": float(ess.mean()), "ess_frac_min": float(ess.min()),
            "weight_share_near_fall": float(w[near_fall].sum() / w.sum()), "rows_share_near_fall": float(near_fall.float().mean()),
            "frac_clipped_near_fall": float((w[near_fall] >= clip).float().mean()) if near_fall.any() else None,
            "weight_share_start": float(w[near_start].sum() / w.sum()), "rows_share_start": float(near_start.float().mean()),
            "std": [round(float(x), 3) for x in log_std.detach().exp()],
            "pi_abs_mean": float(mu.abs().mean()), "pi_frac_abs_gt_0.99": float((mu.abs() > 0.99).float().mean()),
            "pi_data_mse": float((mu - act).pow(2).mean())}


def evaluate(policy: Policy, env_id: str, episodes_: int, seed: int, norm) -> float:
    import gymnasium as gym

    env, total = gym.make(env_id), []
    for i in range(episodes_):
        o, _ = env.reset(seed=seed + i)
        ret, done = 0.0, False
        while not done:
            with torch.no_grad():
                a = policy.mean(norm(torch.as_tensor(o, dtype=torch.float32)[None]))[0].numpy()
            o, r, term, trunc, _ = env.step(a)
            ret, done = ret + float(r), term or trunc
        total.append(ret)
    env.close()
    return float(np.mean(total))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="D4RL-format .hdf5 (observations, actions, rewards, next_observations, terminals, timeouts)")
    p.add_argument("--env", required=True, help="gymnasium id to evaluate in, e.g. Hopper-v5")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=3.0)
    p.add_argument("--expectile", type=float, default=0.7)
    p.add_argument("--clip", type=float, default=100.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reward-scale", default="paper", help="'paper' (1000 / return spread), or a number")
    p.add_argument("--obs-norm", action="store_true", help="standardize observations with the dataset's mean/std")
    p.add_argument("--log-std-min", type=float, default=-5.0)
    p.add_argument("--eval-every", type=int, default=4000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--log-every", type=int, default=1000)
    p.add_argument("--diag-rows", type=int, default=20000)
    p.add_argument("--out", default=None, help="append the JSON lines here too")
    p.add_argument("--save", default=None, help="write the policy's, V's and the target Qs' tensors (safetensors) here at the end")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(a.seed)
    d = load(a.data)
    ep, to_end, from_start, ends_in_term = episodes(d)
    returns = np.bincount(ep, weights=d["rewards"].astype(np.float64))
    spread = float(returns.max() - returns.min())
    scale = 1000.0 / spread if a.reward_scale == "paper" else float(a.reward_scale)
    S = torch.as_tensor(d["observations"], dtype=torch.float32)
    A = torch.as_tensor(d["actions"], dtype=torch.float32).clamp(-1, 1)
    R = torch.as_tensor(d["rewards"], dtype=torch.float32) * scale
    S2 = torch.as_tensor(d["next_observations"], dtype=torch.float32)
    M = 1.0 - torch.as_tensor(d["terminals"], dtype=torch.float32)
    mean, std = (S.mean(0), S.std(0).clamp_min(1e-3)) if a.obs_norm else (torch.zeros(S.shape[1]), torch.ones(S.shape[1]))
    norm = lambda s: (s - mean) / std  # noqa: E731
    S, S2 = norm(S), norm(S2)
    n, od, ad = S.shape[0], S.shape[1], A.shape[1]
    head = {"data": a.data, "rows": n, "episodes": int(ep.max() + 1), "return_min": float(returns.min()),
            "return_max": float(returns.max()), "return_mean": float(returns.mean()), "reward_scale": scale,
            "scaled_reward_mean": float(R.mean()), "terminals": int(d["terminals"].sum()),
            # next_observations continue the episode, and at an episode's end they are not the next
            # episode's first observation (an autoreset leak would put it there)
            "next_obs_continuity_err": float(np.abs(d["next_observations"][:-1] - d["observations"][1:])[to_end[:-1] > 0].max()),
            "end_rows_next_obs_equal_next_first_obs": int((np.abs(d["next_observations"][:-1] - d["observations"][1:]).max(1)
                                                           [to_end[:-1] == 0] < 1e-6).sum()),
            "data_abs_action_mean": float(A.abs().mean()), "data_frac_abs_action_gt_0.99": float((A.abs() > 0.99).float().mean())}
    emit = jsonl_emitter(a.out)
    emit({"config": vars(a), **head})
    q1, q2, v = mlp(od + ad, 1, a.hidden), mlp(od + ad, 1, a.hidden), mlp(od, 1, a.hidden)
    qt1, qt2 = mlp(od + ad, 1, a.hidden), mlp(od + ad, 1, a.hidden)
    qt1.load_state_dict(q1.state_dict())
    qt2.load_state_dict(q2.state_dict())
    for t in (qt1, qt2):
        t.requires_grad_(False)
    pi = Policy(od, ad, a.hidden, a.log_std_min)
    opt_v = torch.optim.Adam(v.parameters(), 3e-4)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], 3e-4)
    opt_pi = torch.optim.Adam(pi.parameters(), 3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_pi, a.steps)
    qt = lambda s, act: torch.minimum(qt1(torch.cat([s, act], -1)), qt2(torch.cat([s, act], -1))).squeeze(-1)  # noqa: E731
    diag_idx = torch.as_tensor(rng.choice(n, size=min(a.diag_rows, n), replace=False))
    near_fall = torch.as_tensor(ends_in_term & (to_end < 10))[diag_idx]
    near_start = torch.as_tensor(from_start < 20)[diag_idx]
    gamma, tau = 0.99, 0.005
    t0 = time.time()

    def diagnostics(step: int) -> dict:
        with torch.no_grad():
            s, act = S[diag_idx], A[diag_idx]
            q = qt(s, act)
            adv = q - v(s).squeeze(-1)
            return {"step": step, "q_mean": float(q.mean()), "v_mean": float(v(s).mean()),
                    **weight_stats(adv, a.beta, a.clip, a.batch, near_fall, near_start, pi.mean(s), act, pi.log_std),
                    "wall_s": round(time.time() - t0, 1)}

    gen = torch.Generator().manual_seed(a.seed)
    for step in range(1, a.steps + 1):
        i = torch.randint(n, (a.batch,), generator=gen)
        s, act, r, s2, m = S[i], A[i], R[i], S2[i], M[i]
        with torch.no_grad():
            q_t = qt(s, act)
        loss_v = (torch.where(q_t - v(s).squeeze(-1) < 0, 1 - a.expectile, a.expectile) * (q_t - v(s).squeeze(-1)) ** 2).mean()
        opt_v.zero_grad()
        loss_v.backward()
        opt_v.step()
        with torch.no_grad():
            y = r + gamma * m * v(s2).squeeze(-1)
            vs = v(s).squeeze(-1)
        sa = torch.cat([s, act], -1)
        loss_q = ((q1(sa).squeeze(-1) - y) ** 2).mean() + ((q2(sa).squeeze(-1) - y) ** 2).mean()
        opt_q.zero_grad()
        loss_q.backward()
        opt_q.step()
        w = torch.exp(a.beta * (q_t - vs)).clamp(max=a.clip)
        loss_pi = -(w * pi.log_prob(s, act)).mean()
        opt_pi.zero_grad()
        loss_pi.backward()
        opt_pi.step()
        sched.step()
        with torch.no_grad():
            for t, src in ((qt1, q1), (qt2, q2)):
                for pt, ps in zip(t.parameters(), src.parameters()):
                    pt.lerp_(ps, tau)
        rec = None
        if step % a.log_every == 0 or step == a.steps:
            rec = diagnostics(step)
        if a.eval_every and (step % a.eval_every == 0 or step == a.steps):
            ret = evaluate(pi, a.env, a.eval_episodes, a.seed + 10_000, norm)
            lo, hi = next((v_ for k, v_ in D4RL_REF.items() if a.env.startswith(k + "-")), (0.0, 1.0))
            rec = {**(rec or {"step": step}), "eval_return": ret, "eval_d4rl_score": 100 * (ret - lo) / (hi - lo)}
        if rec:
            emit(rec)
    if a.save:
        from safetensors.torch import save_file

        nets = {"pi": pi, "v": v, "qt1": qt1, "qt2": qt2}
        save_file({**{f"{n}.{k}": t.contiguous() for n, net in nets.items() for k, t in net.state_dict().items()},
                   "obs_mean": mean, "obs_std": std}, a.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
