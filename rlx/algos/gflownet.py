"""Generative Flow Networks: sample x with probability proportional to R(x)^beta.

Objectives (log space; trajectory tau = (s_0 -> ... -> s_n = x -> s_f), L = n + 1 transitions):
* Flow matching (Bengio et al. 2021, eq. 9): for each visited s != s_0,
  (log(eps + sum_{s'->s} F(s'->s)) - log(eps + sum_{s->s''} F(s->s'')))^2, the exit edge
  matched to the reward, (log(eps + F(x->s_f)) - log(eps + R(x)))^2.
* Detailed balance (Bengio et al. 2023, "GFlowNet Foundations", eq. 44):
  (log F(s) + log P_F(s'|s) - log F(s') - log P_B(s|s'))^2, with F(s_f)P_B := R(x) at the exit.
* Trajectory balance (Malkin et al. 2022, eq. 14):
  (log Z + sum_t log P_F(s_{t+1}|s_t) - log R(x) - sum_t log P_B(s_t|s_{t+1}))^2, learned log Z.
* Sub-trajectory balance (Madan et al. 2023, eq. 8-9): every sub-trajectory i < j of tau,
  weighted by lambda^(j-i) and normalized per trajectory.

A batched env (HyperGrid, the molecule envs) gives states as TensorDicts and ragged action
sets as CSR offsets; a model maps states to flat forward logits [K] and log-flows [B].
Per-trajectory sums and per-state softmaxes go through `rlx.kernels` segment ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from rlx import kernels
from rlx.algos.gflownet_sampler import _draw, _policy_dist, dense_log_probs, sample_trajectories
from rlx.algos.registry import register
from rlx.algos.sample_log import SampleLog
from rlx.core.buffers import EpisodeStore
from rlx.core.checkpoint import Saveable
from rlx.core.learner import make_optimizer, optimizer_step
from rlx.core.loops import SamplerLoop
from rlx.core.nets import MLP
from rlx.core.ranges import count, nonneg, one_of, positive, unit

__all__ = ["GFlowNet", "GFlowNetConfig", "MLPPolicy", "sample_trajectories", "trajectory_balance",
           "detailed_balance", "subtrajectory_balance", "flow_matching"]

OBJECTIVES = ("tb", "db", "subtb", "fm")


@dataclass
class GFlowNetConfig:
    """GFlowNet hyperparameters; defaults follow torchgfn's HyperGrid example."""

    objective: str = one_of("tb", ("tb", "db", "subtb", "fm"))  # tb | db | subtb | fm
    batch_size: int = count(16)  # trajectories sampled per update
    lr: float = positive(1e-3)  # Adam learning rate of the policy/flow network
    lr_log_z: float = positive(0.1)  # learning rate of log Z (trajectory balance)
    hidden: int = count(256)  # hidden width of the MLP (HyperGrid) or MPNN (molecules)
    num_layers: int = count(2)  # hidden layers (MLP) or message-passing rounds (MPNN)
    encoder: str = one_of("gine", ("gine", "nnconv"))  # molecule encoder: gine | nnconv
    epsilon: float = unit(0.0)  # epsilon-uniform exploration: sample from (1-eps) P_F + eps Uniform(valid actions)
    beta: float = positive(1.0)  # reward temperature: the target is R(x)^beta
    subtb_lambda: float = positive(0.9)  # SubTB weight lambda^(j-i) of a sub-trajectory of length j-i
    fm_epsilon: float = positive(1e-6)  # FM's epsilon inside log(eps + flow)
    learned_pb: bool = False  # learn P_B (needs an env with backward_mask/backward_action) instead of uniform
    replay_size: int = nonneg(0)  # keep this many highest-reward trajectories (0: no replay)
    replay_fraction: float = unit(0.5)  # fraction of each update's trajectories drawn from the replay
    max_grad_norm: float = nonneg(0.0)  # global gradient-norm clip (0: off)
    eval_samples: int = count(10_000)  # terminal states sampled for empirical metrics at evaluation
    record_samples: bool = False  # molecule envs: write every training molecule to <run>/samples.jsonl


# ---------------------------------------------------------------------------- losses


def trajectory_balance(log_z: torch.Tensor, log_pf: torch.Tensor, log_pb: torch.Tensor, log_reward: torch.Tensor,
                       ptr: torch.Tensor) -> torch.Tensor:
    """TB (Malkin et al. 2022, eq. 14); log_pf, log_pb [M] per transition, log_reward [E]."""
    residual = log_z + kernels.segment_sum(log_pf - log_pb, ptr) - log_reward  # [E]
    return residual.pow(2).mean()


def detailed_balance(log_flow: torch.Tensor, log_pf: torch.Tensor, log_pb: torch.Tensor, log_reward: torch.Tensor,
                     ptr: torch.Tensor) -> torch.Tensor:
    """DB (Bengio et al. 2023, eq. 44) on every transition; log_flow [M] = log F(s_t) of each row's
    state. The next state's flow is the next row's log F, or log R(x) on a trajectory's exit row."""
    M = log_flow.shape[0]
    last = ptr[1:] - 1  # [E] exit rows
    next_flow = torch.cat([log_flow[1:], log_flow.new_zeros(1)])  # row t+1 holds s_{t+1}
    next_flow = next_flow.index_put((last,), log_reward.to(log_flow.dtype))
    residual = log_flow + log_pf - next_flow - log_pb  # log_pb = 0 on exit rows
    return residual.pow(2).sum() / M


def subtrajectory_balance(log_flow: torch.Tensor, log_pf: torch.Tensor, log_pb: torch.Tensor,
                          log_reward: torch.Tensor, ptr: torch.Tensor, lam: float) -> torch.Tensor:
    """SubTB(lambda) (Madan et al. 2023, eq. 9): for states 0..L of each trajectory with
    log F_L := log R(x), residual(i, j) = log F_i + sum_{i<=k<j} (log P_F - log P_B)_k - log F_j,
    loss = sum_{i<j} lam^(j-i) residual^2 / sum_{i<j} lam^(j-i), averaged over trajectories."""
    E, lengths = ptr.numel() - 1, ptr[1:] - ptr[:-1]
    L = int(lengths.max())
    seg = kernels.ptr_to_segment_ids(ptr, log_flow.shape[0])
    col = torch.arange(log_flow.shape[0]) - ptr[seg]  # position of each row in its trajectory
    flows = log_flow.new_zeros(E, L + 1).index_put((seg, col), log_flow)  # [E, L+1] log F(s_0..s_L)
    flows = flows.index_put((torch.arange(E), lengths), log_reward.to(log_flow.dtype))
    steps = log_flow.new_zeros(E, L).index_put((seg, col), log_pf - log_pb)  # [E, L]
    cum = torch.cat([steps.new_zeros(E, 1), steps.cumsum(1)], 1)  # [E, L+1]: C_i = sum_{k<i}
    residual = flows[:, :, None] + cum[:, None, :] - cum[:, :, None] - flows[:, None, :]  # [E, i, j]
    i, j = torch.arange(L + 1)[:, None], torch.arange(L + 1)[None, :]
    valid = (j > i)[None] & (j[None] <= lengths[:, None, None])  # [E, L+1, L+1]
    weight = torch.where(valid, lam ** (j - i).clamp_min(0).to(log_flow.dtype), 0.0)
    per_traj = (weight * residual.pow(2)).sum((1, 2)) / weight.sum((1, 2))
    return per_traj.mean()


def flow_matching(log_inflow: torch.Tensor, log_outflow: torch.Tensor, log_exit_flow: torch.Tensor,
                  log_reward: torch.Tensor, eps: float) -> torch.Tensor:
    """FM in log space (Bengio et al. 2021, eq. 9 with the exit edge matched to R): inputs are
    logsumexp'd edge flows into / out of each non-initial visited state, and the exit-edge flow
    log F(x -> s_f) of each terminal x against log R(x)."""
    log_eps = math.log(eps)

    def soft(x):  # log(eps + exp(x))
        return torch.logaddexp(x, torch.full_like(x, log_eps))

    state_term = (soft(log_inflow) - soft(log_outflow)).pow(2).mean() if log_inflow.numel() else log_exit_flow.sum() * 0
    exit_term = (soft(log_exit_flow) - soft(log_reward)).pow(2).mean()
    return state_term + exit_term


# ---------------------------------------------------------------------------- policy / sampling


class MLPPolicy(Saveable, nn.Module):
    """HyperGrid policy: an MLP on `env.encode(states)` with heads for forward logits
    [B, A] (flattened to [B * A]), log F(s) [B], and backward logits [B, A - 1] when learned.

    A batch of at least `DEDUPE_ROWS` rows runs the MLP once per distinct input row and gathers
    the rows from that: GFlowNet batches repeat states (every trajectory starts at s_0). Rows are
    keyed by `x @ 2**j` (exact for 0/1 features such as HyperGrid's one-hots) and the gathered
    input is compared with x before use, so any other input falls back to the plain MLP; the
    gather's backward sums the repeated rows' gradients: values and gradients are the plain MLP's
    (up to float summation order)."""

    DEDUPE_ROWS = 32  # below this, the MLP on the repeated rows costs less than finding them

    def __init__(self, env, hidden: int = 256, num_layers: int = 2, learned_pb: bool = False):
        super().__init__()
        self.env, self.num_actions = env, env.num_actions
        self.trunk = MLP(env.obs_dim, hidden, [hidden] * (num_layers - 1), act="relu", orthogonal=False)
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, self.num_actions + 1 + (self.num_actions - 1 if learned_pb else 0))
        self._powers = 2.0 ** torch.arange(53, dtype=torch.float64)  # row keys, exact for 0/1 rows of <= 53 features

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """head(act(trunk(x))): every Linear of the trunk is followed by a ReLU (the last one by
        `act`), so these are the same calls without a module call per layer (~10 us a forward,
        which runs on every sampler step)."""
        for layer in self.trunk:
            if isinstance(layer, nn.Linear):
                x = torch.relu(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, self.head.weight, self.head.bias)

    def _outputs(self, states: TensorDict) -> torch.Tensor:
        """All head outputs [B, A + 1 (+ A - 1)], each distinct input row computed once (see above)."""
        x = self.env.encode(states)  # [B, obs_dim]
        B = x.shape[0]
        if B < self.DEDUPE_ROWS or x.shape[1] > self._powers.numel():
            return self._net(x)
        keys, row_of = torch.unique(x.double() @ self._powers[: x.shape[1]], return_inverse=True)  # [U], [B]
        first = torch.empty(keys.numel(), dtype=torch.int64).scatter_(0, row_of, torch.arange(B))  # a row of each
        distinct = x[first]
        if keys.numel() == B or not torch.equal(distinct[row_of], x):  # nothing repeats, or not 0/1 features
            return self._net(x)
        return self._net(distinct)[row_of]

    def forward(self, states: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._outputs(states)
        return out[:, : self.num_actions].reshape(-1), out[:, self.num_actions]

    def backward_logits(self, states: TensorDict) -> torch.Tensor:
        return self._outputs(states)[:, self.num_actions + 1 :]


# ---------------------------------------------------------------------------- learner


class GFlowNet(Saveable):
    """GFlowNet learner over a batched env (CPU tensors). `update(batch)` takes the transitions
    of `sample` as one TensorDict, `store.to_batch(log_reward=log_r)` (rows `data` [M], CSR `ptr`
    [E+1], log R(x) per trajectory `log_reward` [E]); `model(states)` returns flat forward logits
    [K] in the env's ragged layout and log F(s) [B]."""

    def __init__(self, cfg: GFlowNetConfig, env, model: nn.Module):
        if cfg.objective not in OBJECTIVES:
            raise ValueError(f"algo.objective={cfg.objective!r} is not one of {list(OBJECTIVES)}")
        if cfg.objective == "fm" and not env.has_parents:
            raise ValueError(f"flow matching enumerates parents; {type(env).__name__} has no parents(); use tb, db or subtb")
        if cfg.learned_pb and not env.has_backward_actions:
            raise ValueError(f"algo.learned_pb needs env.backward_mask/backward_action; {type(env).__name__} has none")
        if not 0.0 <= cfg.epsilon < 1.0:
            raise ValueError(f"algo.epsilon must be in [0, 1), got {cfg.epsilon}")
        self.cfg, self.env, self.model = cfg, env, model
        self.log_z = nn.Parameter(torch.zeros(()))
        self.optimizer = make_optimizer(model.parameters(), cfg.lr)
        self.optimizer.add_param_group({"params": [self.log_z], "lr": cfg.lr_log_z})
        self.replay: tuple[EpisodeStore, torch.Tensor] | None = None
        self.generator = torch.Generator().manual_seed(0)

    def sample(self, n: int, epsilon: float | None = None) -> tuple[EpisodeStore, TensorDict, torch.Tensor]:
        eps = self.cfg.epsilon if epsilon is None else epsilon
        return sample_trajectories(self.env, self.model, n, eps, self.generator)

    @torch.no_grad()
    def sample_objects(self, n: int, epsilon: float = 0.0):
        """n objects x drawn with probability ~ R(x)^beta (no exploration by default): SMILES for
        the molecule envs (`env.smiles`), else the terminal states as a TensorDict [n]. Draws
        from `self.generator` (seed it for repeatable samples)."""
        _, terminal, _ = self.sample(n, epsilon)
        return self.env.smiles(terminal) if hasattr(self.env, "smiles") else terminal

    @torch.no_grad()
    def act(self, states: TensorDict, deterministic: bool = False) -> TensorDict:
        dist, _, _ = _policy_dist(self.env, self.model, states)
        if deterministic:
            idx = torch.stack([dist.logits[a:b].argmax() + a for a, b in zip(dist.ptr[:-1], dist.ptr[1:])])
            action = idx - dist.ptr[:-1]
            if not torch.isfinite(dist.logits[idx]).all():
                raise RuntimeError(f"{type(self.env).__name__}: a state has no allowed action (fully masked action set)")
        else:
            action = _draw(dist, self.generator, self.env)
            idx = action + dist.ptr[:-1]
        return TensorDict({"action": action, "logp": dist.log_prob(idx)}, batch_size=states.batch_size)

    @torch.no_grad()
    def estimated_log_z(self) -> float:
        """log Z: the learned scalar for TB, log F(s_0) for DB/SubTB, the total edge flow out of s_0 for FM."""
        if self.cfg.objective == "tb":
            return float(self.log_z)
        s0 = self.env.reset(1)
        logits, log_flow = self.model(s0)
        if self.cfg.objective == "fm":
            return float(torch.logsumexp(logits.masked_fill(~self.env.forward_mask(s0), float("-inf")), 0))
        return float(log_flow[0])

    @torch.no_grad()
    def policy_log_probs(self, states: TensorDict) -> torch.Tensor:
        """Dense log P_F [B, A] for envs whose action sets all have the same size A (HyperGrid)."""
        dist, _, _ = _policy_dist(self.env, self.model, states)
        return dist.logits.reshape(states.shape[0], -1)  # [B*A] -> [B, A]

    def log_pf_pb(self, store: EpisodeStore) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """log P_F(a_t|s_t), log P_B(s_t|s_{t+1}), log F(s_t) [M] with gradients; raw logits [K]."""
        d, w = store.data, self.env.action_width
        if w is not None:  # `_policy_dist`'s dense log-softmax on [M, w] and one gather of the actions' entries
            logits, log_flow = self.model(d["obs"])
            logp = dense_log_probs(self.env, logits, d["obs"])
            log_pf = logp.nan_to_num(nan=-math.inf, neginf=-math.inf).gather(1, d["action"][:, None]).squeeze(1)
        else:
            dist, logits, log_flow = _policy_dist(self.env, self.model, d["obs"])
            log_pf = dist.log_prob(dist.ptr[:-1] + d["action"])
        log_pb = d["log_pb"]
        if self.cfg.learned_pb:
            moves = torch.nonzero(~d["terminated"]).squeeze(-1)
            nxt = d["next_obs"][moves]
            back = self.model.backward_logits(nxt).masked_fill(~self.env.backward_mask(nxt), float("-inf"))
            chosen = back.log_softmax(-1).gather(1, self.env.backward_action(d["action"][moves])[:, None]).squeeze(1)
            log_pb = torch.zeros_like(log_pf).index_put((moves,), chosen)
        return log_pf, log_pb, log_flow, logits

    def loss(self, store: EpisodeStore, log_reward: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        log_r = cfg.beta * log_reward
        log_pf, log_pb, log_flow, logits = self.log_pf_pb(store)
        if cfg.objective == "tb":
            loss = trajectory_balance(self.log_z, log_pf, log_pb, log_r, store.ptr)
        elif cfg.objective == "db":
            loss = detailed_balance(log_flow, log_pf, log_pb, log_r, store.ptr)
        elif cfg.objective == "subtb":
            loss = subtrajectory_balance(log_flow, log_pf, log_pb, log_r, store.ptr, cfg.subtb_lambda)
        else:
            loss = self.flow_matching_loss(store, logits, log_r)
        return loss, {f"loss/{cfg.objective}": float(loss.detach()), "train/log_z": float(self.log_z.detach())}

    def flow_matching_loss(self, store: EpisodeStore, logits: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
        """Forward logits are log edge flows. Inflow of s: edge flows of its parents' actions into s."""
        d, env = store.data, self.env
        aptr = env.action_ptr(d["obs"])
        mask = env.forward_mask(d["obs"])
        edge = logits.masked_fill(~mask, float("-inf"))
        exit_rows = d["terminated"]
        inner = torch.nonzero(d["t"] > 0).squeeze(-1)  # visited states other than s_0
        log_out = kernels.segment_logsumexp(edge, aptr)[inner]
        parents, action, valid = env.parents(d["obs"][inner])
        p_logits, _ = self.model(parents)
        p_edge = p_logits[env.action_ptr(parents)[:-1] + action].masked_fill(~valid, float("-inf"))
        log_in = torch.logsumexp(p_edge.reshape(inner.numel(), -1), 1)  # [S, P] -> [S]
        log_exit = edge[aptr[:-1][exit_rows] + d["action"][exit_rows]]
        return flow_matching(log_in, log_out, log_exit, log_r, self.cfg.fm_epsilon)

    def update(self, batch: TensorDict) -> dict[str, float]:
        sampled, sampled_log_r = EpisodeStore.from_batch(batch), batch["log_reward"]
        store, log_reward = self._with_replay(sampled, sampled_log_r)
        loss, info = self.loss(store, log_reward)
        optimizer_step(self.optimizer, loss, max_grad_norm=self.cfg.max_grad_norm)
        info["train/log_reward_mean"] = float(sampled_log_r.mean())
        info["train/length_mean"] = float(sampled.lengths.float().mean())
        return info

    def _with_replay(self, store: EpisodeStore, log_reward: torch.Tensor) -> tuple[EpisodeStore, torch.Tensor]:
        """Mix in the best trajectories seen so far (a prioritized replay of high rewards)."""
        cfg = self.cfg
        if cfg.replay_size <= 0:
            return store, log_reward
        batch = (store, log_reward)
        if self.replay is not None:
            k = min(int(round(cfg.replay_fraction * store.num_episodes)), self.replay[0].num_episodes)
            pick = torch.randperm(self.replay[0].num_episodes, generator=self.generator)[:k]
            batch = (EpisodeStore.concat([store, self.replay[0].select(pick)]), torch.cat([log_reward, self.replay[1][pick]]))
            pool = EpisodeStore.concat([self.replay[0], store])
            pool_r = torch.cat([self.replay[1], log_reward])
        else:
            pool, pool_r = store, log_reward
        keep = torch.argsort(pool_r, descending=True)[: cfg.replay_size]
        self.replay = (pool.select(keep), pool_r[keep])
        return batch

    def state_dict(self) -> dict:
        replay = None if self.replay is None else {"data": self.replay[0].data.to_dict(), "ptr": self.replay[0].ptr,
                                                    "log_reward": self.replay[1]}
        return {"model": self.model.state_dict(), "log_z": self.log_z.detach().clone(), "replay": replay,
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            self.log_z.copy_(state["log_z"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        replay = state.get("replay")
        if replay is not None:  # plain tensors in the checkpoint (loadable with weights_only=True)
            data = TensorDict(replay["data"], batch_size=[int(replay["ptr"][-1])])
            replay = (EpisodeStore(data, replay["ptr"]), replay["log_reward"])
        self.replay = replay


# ---------------------------------------------------------------------------- entry point


def build(cfg, env) -> GFlowNet:
    """The learner with the default model for an env: an MPNN for molecule envs, else an MLP."""
    a = cfg.algo
    if env.policy_input != "onehot":
        from rlx.models.graph_nets import graph_policy

        model = graph_policy(env, a.hidden, a.num_layers, a.encoder)
    else:
        model = MLPPolicy(env, a.hidden, a.num_layers, a.learned_pb)
    return GFlowNet(a, env, model)


def check_cpu(cfg) -> None:
    """Trajectory samplers run on the CPU (batched envs build CPU tensors, molecule rewards run in
    RDKit): an explicit non-CPU `trainer.device` is refused in one line, not silently ignored;
    `auto` means the CPU here."""
    from rlx.core.errors import ConfigError

    if cfg.trainer.device.split(":")[0] not in ("cpu", "auto"):
        raise ConfigError(f"trainer.device={cfg.trainer.device}: algo={cfg.algorithm} runs on the CPU (batched envs "
                          "build CPU tensors); use trainer.device=cpu")


def check(cfg):
    """The env class of `env.entry_point`, checked against `rlx.envs.batched.BatchedEnv`'s
    methods before anything is built (its attributes are checked once it is constructed)."""
    from rlx.core.errors import EnvError
    from rlx.envs.batched import check_batched_env
    from rlx.envs.molecules import check_molecule_reward
    from rlx.envs.registry import import_object

    check_cpu(cfg)
    if not cfg.env.entry_point:
        raise EnvError(f"algo={cfg.algorithm} needs a batched env: env=hypergrid, env=molecules_atom, env=molecules_fragments, "
                       "or env.entry_point=pkg.mod:Class (a rlx.envs.batched.BatchedEnv)")
    cls = import_object(cfg.env.entry_point)
    if isinstance(cls, type):  # a factory function is checked by what it returns
        check_batched_env(cls, f"env.entry_point={cfg.env.entry_point}")
        check_molecule_reward(cfg.env, cls)
    return cls


@register("gflownet", GFlowNetConfig, "GFlowNets (FM/DB/TB/SubTB) on batched HyperGrid and molecule envs",
          default_env="hypergrid", check=lambda cfg: check(cfg))
def train(ctx) -> dict:
    """`python -m rlx.train algo=gflownet algo.objective=tb env=hypergrid`: SamplerLoop over
    batches of trajectories; evaluation is the env's `evaluate_sampler` metrics."""
    from rlx.core.errors import ConfigError
    from rlx.envs.batched import check_batched_env
    from rlx.envs.registry import construct

    cfg = ctx.cfg
    check(cfg)
    env = construct(cfg.env.entry_point, cfg.env.kwargs)
    check_batched_env(env, f"env.entry_point={cfg.env.entry_point}")
    try:
        learner = build(cfg, env)
    except ValueError as e:  # settings the env and the objective disagree on: refused before work
        raise ConfigError(" ".join(str(e).split())) from None
    return run_sampler(ctx, env, learner, env.key_metric)


def run_sampler(ctx, env, learner, key_metric: str) -> dict:
    """The SamplerLoop of a trajectory sampler (GFlowNet and the molecule baselines): batches of
    `learner.sample`, optional `<run>/samples.jsonl`, evaluation by the env's `evaluate_sampler`
    with the training generator's state put back, so evaluations never change the training samples."""
    cfg = ctx.cfg
    learner.generator.manual_seed(cfg.seed)
    log = SampleLog.for_run(ctx, env)

    def sample():
        store, terminal, log_r = learner.sample(cfg.algo.batch_size)
        if log is not None:
            log.add(env.smiles(terminal), log_r.exp().tolist())
        return store.to_batch(log_reward=log_r), store.num_episodes

    def evaluate() -> dict[str, float]:
        state = learner.generator.get_state()  # evaluation's draws leave the training samples as they were
        metrics = env.evaluate_sampler(learner, cfg.algo.eval_samples)
        learner.generator.set_state(state)
        return metrics

    loop = SamplerLoop(learner, sample, cfg.trainer, ctx.logger, evaluate, cfg.seed)
    loop.key_metric = key_metric
    return ctx.run(loop)
