"""Trajectory-cluster attribution (Deshmukh et al., ICLR 2023, "Explaining RL Decisions with
Trajectories", Algorithms 1-5): which training trajectories caused an offline policy's decision.

1. Encode every trajectory (`rlx.algos.traj_encoders`: LSTM autoencoder or causal transformer
   over (s, a, r) windows of length L, averaged per trajectory).            (Alg. 1)
2. Cluster the embeddings: k-means for k in [k_min, k_max], keep the k of highest BIC under a
   spherical Gaussian model (X-means, Pelleg & Moore 2000, section 2).      (Alg. 2)
3. Data embedding of a set of trajectories: d = softmax(mean_i e_i / T); distance between two
   sets: the 1-D Wasserstein distance between their data embeddings, read as distributions
   over the embedding coordinates 0..D-1.                                    (Alg. 3)
4. Explanation policies: the same offline learner trained on the whole data and on each
   complement D \\ C_j (K + 1 independent runs through an `rlx.core.executors` executor).  (Alg. 4)
5. Attribution of a decision at s: candidates are clusters whose policy acts differently
   (discrete: another action; continuous: the top-k clusters by ||a_j - a||_2 among those
   above a tolerance); choose the candidate whose complement's data embedding is closest to
   the original one; no attribution when no policy changes.                 (Alg. 5)
6. Cluster hierarchy (an extension, `hierarchy=True`): when no single cluster's removal changes
   a decision (a behaviour split over several clusters, e.g. by BIC), the same rule is applied to
   the coarser partitions of Ward's agglomerative merging of the clusters (the k-means SSE
   criterion continued upward), finest first; each level adds one merged group.

Run it: `python -m rlx.train algo=attribution` (grid world with planted families) or
`python -m rlx.train algo=attribution algo.dataset=pendulum-tiny algo.learner=iql`; the run
directory gets `report.md`, `attribution.json` and PNG figures. See docs/attribution.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlx.algos.registry import register
from rlx.core.ranges import count, each, nonneg, positive, unit

__all__ = ["AttributionConfig", "ExplanationJob", "xmeans", "cluster_bic", "ward_hierarchy", "data_embedding",
           "wasserstein_1d", "check_config", "complement", "train_explanation", "train_explanations", "attribute",
           "attribute_hierarchy", "run_attribution"]

LEARNERS = ("tabular", "iql", "bc", "td3bc")


@dataclass
class AttributionConfig:
    """The whole attribution pipeline: data, encoder, clustering, explanation policies, queries."""

    dataset: str = "gridworld"  # gridworld (planted families) or a dataset name/path for rlx.envs.datasets
    grid_episodes: list[int] = each(lambda: [40, 40, 40], 1)  # gridworld: episodes per family
    grid_noise: float = unit(0.3)  # gridworld: probability of a random lobby step
    learner: str = "tabular"  # explanation learner: tabular (discrete obs/actions) | iql | bc | td3bc
    learner_steps: int = count(3000)  # gradient steps per explanation policy (neural learners)
    learner_batch: int = count(256)  # transitions per gradient step (neural learners)
    learner_hidden: list[int] = each(lambda: [64, 64], 1)  # hidden sizes of neural learners
    encoder: str = "lstm"  # trajectory encoder: lstm | transformer
    window: int = count(8)  # sub-trajectory length L
    stride: int = count(2)  # rows between consecutive windows of an episode
    embed_dim: int = count(16)  # embedding width D
    encoder_steps: int = count(600)  # encoder gradient steps
    encoder_lr: float = positive(1e-3)  # encoder Adam learning rate
    k_min: int = count(2)  # fewest clusters tried
    k_max: int = count(8)  # most clusters tried
    temperature: float = positive(0.1)  # T of the data embedding softmax(mean e / T)
    top_k: int = count(1)  # continuous actions: candidate clusters with the largest action change
    action_tol: float = nonneg(0.05)  # continuous actions: ||a_j - a||_2 below this counts as unchanged
    num_queries: int = count(64)  # query states sampled from the data (gridworld: the 14 lobby cells)
    executor: str = "process"  # rlx.core.executors executor for the K + 1 trainings: process | inprocess | ray
    n_jobs: int = count(2)  # parallel trainings
    figures: int = nonneg(4)  # query states drawn with their attributed trajectories
    hierarchy: bool = True  # queries no single cluster explains: retry with Ward merges of the clusters (coarser)


# ---------------------------------------------------------------------------- clustering


def cluster_bic(x: torch.Tensor, labels: np.ndarray, centers: np.ndarray) -> float:
    """BIC of a k-means solution under identical spherical Gaussians (Pelleg & Moore 2000, sec. 2):
    log L = sum_c n_c log(n_c / N) - N d / 2 log(2 pi s2) - (N - K) d / 2, with the pooled
    per-coordinate variance s2 = SSE / ((N - K) d); p = (K - 1) + K d + 1; BIC = log L - p/2 log N."""
    x = x.double().numpy()
    n, d = x.shape
    k = centers.shape[0]
    sse = float(((x - centers[labels]) ** 2).sum())
    s2 = max(sse / (max(n - k, 1) * d), 1e-12)
    counts = np.bincount(labels, minlength=k)
    counts = counts[counts > 0]
    loglik = float((counts * np.log(counts / n)).sum()) - n * d / 2 * math.log(2 * math.pi * s2) - (n - k) * d / 2
    return loglik - ((k - 1) + k * d + 1) / 2 * math.log(n)


def xmeans(x: torch.Tensor, k_min: int = 2, k_max: int = 8, seed: int = 0) -> tuple[np.ndarray, dict[int, float]]:
    """Seeded k-means for every k in [k_min, k_max] (capped at the number of distinct points);
    returns the labels of the highest-BIC k and {k: BIC}."""
    from sklearn.cluster import KMeans

    if not 1 <= k_min <= k_max:
        raise ValueError(f"need 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    distinct = int(torch.unique(x, dim=0).shape[0])
    ks = [k for k in range(k_min, k_max + 1) if k <= distinct] or [1]
    best, scores = None, {}
    for k in ks:
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x.double().numpy())
        scores[k] = cluster_bic(x, km.labels_, km.cluster_centers_)
        if best is None or scores[k] > scores[best[0]]:
            best = (k, km.labels_.astype(np.int64))
    return best[1], scores


def ward_hierarchy(x: torch.Tensor, labels: np.ndarray | torch.Tensor) -> tuple[list[tuple[int, ...]], list[list[int]]]:
    """Ward's agglomerative merging of the K clusters of `labels` over the points `x` [N, D]:
    repeatedly merge the two groups whose union raises the within-group SSE the least,
    n_a n_b / (n_a + n_b) ||mu_a - mu_b||^2 (the k-means objective continued upward), until two
    groups remain (the root, all data, is never a candidate). Returns the groups (group g < K is
    cluster g, group K + i the i-th merge; each a sorted tuple of clusters) and the levels: the
    partitions into K, K - 1, ..., 2 groups, each a sorted list of group ids."""
    x = x.double()
    labels = torch.as_tensor(labels)
    k = int(labels.max()) + 1
    groups: list[tuple[int, ...]] = [(j,) for j in range(k)]
    active = {j: (int((labels == j).sum()), x[labels == j].mean(0)) for j in range(k)}
    levels = [sorted(active)]
    while len(active) > 2:
        ids = sorted(active)
        _, a, b = min(((active[a][0] * active[b][0] / (active[a][0] + active[b][0])
                           * float((active[a][1] - active[b][1]).pow(2).sum()), a, b)
                          for i, a in enumerate(ids) for b in ids[i + 1:]))
        (na, ma), (nb, mb) = active.pop(a), active.pop(b)
        active[len(groups)] = (na + nb, (na * ma + nb * mb) / (na + nb))
        groups.append(tuple(sorted(groups[a] + groups[b])))
        levels.append(sorted(active))
    return groups, levels


# ---------------------------------------------------------------------------- data embedding


def data_embedding(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """d = softmax(mean_i e_i / T) over the D coordinates (paper Alg. 3): [E, D] -> [D]."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(embeddings.double().mean(0) / temperature, -1)


def wasserstein_1d(p: torch.Tensor, q: torch.Tensor) -> float:
    """W1 between two distributions on the support 0..D-1: sum_i |F_p(i) - F_q(i)| (unit spacing)."""
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"wasserstein_1d needs two 1-D weight vectors of one size, got {tuple(p.shape)}, {tuple(q.shape)}")
    p, q = p.double() / p.sum(), q.double() / q.sum()
    return float((torch.cumsum(p, 0) - torch.cumsum(q, 0))[:-1].abs().sum())


def complement(store, labels: torch.Tensor, cluster: int | tuple[int, ...]):
    """The store without the episodes of `cluster` (one cluster or a tuple of clusters, a merged
    group): `EpisodeStore.select` of the others."""
    drop = torch.isin(torch.as_tensor(labels), torch.as_tensor(cluster).reshape(-1))
    keep = torch.nonzero(~drop).squeeze(-1)
    if keep.numel() == 0:
        raise ValueError(f"removing cluster {cluster} leaves no episodes")
    return store.select(keep)


# ---------------------------------------------------------------------------- explanation policies


@dataclass(frozen=True)
class ExplanationJob:
    """One of the K + 1 trainings: cluster -1 is the full dataset."""

    cluster: int
    store: Any  # EpisodeStore of the (complement) dataset
    observation_space: Any
    action_space: Any
    learner: str
    steps: int
    batch_size: int
    hidden: tuple[int, ...]
    seed: int


def build_learner(job: ExplanationJob):
    if job.learner == "tabular":
        from rlx.envs.gridworld import TabularQ, TabularQConfig

        return TabularQ(TabularQConfig(), job.observation_space, job.action_space)
    from rlx.algos.offline_ac import OfflineActorCritic
    from rlx.algos.registry import preset_config

    cfg = preset_config(job.learner, hidden=list(job.hidden), batch_size=job.batch_size)  # iql or its presets
    return OfflineActorCritic(cfg, job.observation_space, job.action_space, total_steps=job.steps)


def train_explanation(job: ExplanationJob) -> dict[str, Any]:
    """Train one explanation policy (runs in a sweep worker); returns its state and metrics."""
    from rlx.core.buffers import ReplayBuffer

    torch.manual_seed(job.seed)
    start = time.time()
    learner = build_learner(job)
    if job.learner == "tabular":
        from rlx.envs.gridworld import fit_tabular

        info = fit_tabular(learner, job.store)
    else:
        from rlx.algos.offline_ac import scale_rewards

        store = job.store
        scale_rewards(store, learner.cfg)
        learner.set_dataset_stats(store.data["obs"])
        buffer = ReplayBuffer.from_episodes(store)
        gen = torch.Generator().manual_seed(job.seed)
        for _ in range(job.steps):
            info = learner.update(buffer.sample(job.batch_size, gen))
    return {"cluster": job.cluster, "state": learner.state_dict(), "info": info, "seconds": time.time() - start}


def train_explanations(jobs: list[ExplanationJob], executor: str = "process", n_jobs: int = 2) -> dict[int, Any]:
    """The K + 1 trainings through `rlx.core.executors.EXECUTORS[executor]`; returns {cluster: learner}."""
    from rlx.core.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor={executor!r}; choose one of {', '.join(EXECUTORS)}")
    learners = {}
    for job, result in EXECUTORS[executor](n_jobs).map(train_explanation, jobs):
        if isinstance(result, BaseException):
            raise RuntimeError(f"explanation policy for cluster {job.cluster} failed: {result}") from result
        learner = build_learner(job)
        learner.load_state_dict(result["state"])
        learners[job.cluster] = learner
    return learners


def initial_state_value(learner, obs: torch.Tensor) -> float:
    """Mean over the data's initial states of the policy's value: max_a Q (tabular) or
    Q(s, pi(s)) with the twin-Q mean (actor-critic; behavior cloning has no critic -> nan)."""
    if hasattr(learner, "value"):
        return float(learner.value(obs).mean())
    if not hasattr(learner, "q"):
        return float("nan")
    with torch.no_grad():
        a = learner.to_unit(learner.act(obs, deterministic=True)["action"])
        return float(learner.q_value(learner.norm_obs(obs), a).mean())


# ---------------------------------------------------------------------------- attribution rule


def attribute(orig: torch.Tensor, alt: torch.Tensor, distances: torch.Tensor, discrete: bool, top_k: int = 1,
              tol: float = 0.0) -> torch.Tensor:
    """Paper Alg. 5. orig [Q] (discrete) or [Q, A]; alt [K, Q] or [K, Q, A]: actions of the K
    explanation policies; distances [K]: W(d_orig, d_j). Returns the attributed cluster per
    query [Q] (-1: no policy acts differently)."""
    if discrete:
        changed = alt != orig[None]  # [K, Q]
    else:
        gap = (alt - orig[None]).flatten(2).norm(dim=-1)  # [K, Q]
        rank = gap.argsort(0, descending=True).argsort(0)  # 0 = largest change
        changed = (gap > tol) & (rank < top_k)
    score = torch.where(changed, distances.double()[:, None], math.inf)
    best = score.argmin(0)
    return torch.where(changed.any(0), best, -1)


def attribute_hierarchy(orig: torch.Tensor, alt: torch.Tensor, distances: torch.Tensor, levels: list[list[int]],
                        discrete: bool, top_k: int = 1, tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Alg. 5 over a hierarchy of partitions, finest first. alt [G, Q(, A)] and distances [G]
    are indexed by group id; `levels` are partitions (lists of group ids, `ward_hierarchy`).
    A query gets the rule's answer at the first level where some group of that level's
    partition changes its action (level 0, the clusters themselves, is exactly `attribute`).
    Returns (group per query, -1 if none; level per query, -1 if none)."""
    group = torch.full((orig.shape[0],), -1, dtype=torch.long)
    level = torch.full_like(group, -1)
    for lvl, ids in enumerate(levels):
        ids_t = torch.tensor(ids)
        got = attribute(orig, alt[ids_t], distances[ids_t], discrete, top_k, tol)
        new = (group < 0) & (got >= 0)
        group = torch.where(new, ids_t[got.clamp_min(0)], group)
        level = torch.where(new, lvl, level)
        if (group >= 0).all():
            break
    return group, level


# ---------------------------------------------------------------------------- pipeline


def check_config(cfg: AttributionConfig, action_space=None) -> None:
    """One clear line for each invalid setting (raised before any work)."""
    import gymnasium as gym

    from rlx.core.executors import EXECUTORS
    from rlx.models.traj_encoders import ENCODERS

    for key, value, choices in (("learner", cfg.learner, LEARNERS), ("encoder", cfg.encoder, tuple(ENCODERS)),
                                ("executor", cfg.executor, tuple(EXECUTORS))):
        if value not in choices:
            raise ValueError(f"unknown algo.{key}={value!r}; choose one of {', '.join(choices)}")
    if not 1 <= cfg.k_min <= cfg.k_max:
        raise ValueError(f"need 1 <= algo.k_min <= algo.k_max, got {cfg.k_min} and {cfg.k_max}")
    for key in ("window", "stride", "embed_dim", "top_k", "num_queries", "n_jobs"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"algo.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.temperature <= 0:
        raise ValueError(f"algo.temperature must be > 0, got {cfg.temperature}")
    if cfg.learner == "tabular" and action_space is not None and not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(f"algo.learner=tabular needs discrete actions, the data has {action_space}; use iql, bc or td3bc")
    if cfg.learner != "tabular" and action_space is not None and not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"algo.learner={cfg.learner} needs continuous actions, the data has {action_space}; use tabular")


def run_attribution(dataset, cfg: AttributionConfig, observation_space, action_space, queries: torch.Tensor,
                    seed: int = 0, out_dir: Path | None = None, ground_truth: torch.Tensor | None = None,
                    log=print) -> dict[str, Any]:
    """Encode, cluster, train the K + 1 explanation policies, attribute `queries` [Q, obs...];
    with `cfg.hierarchy`, queries no single cluster explains are retried on the Ward merges of
    the clusters (`ward_hierarchy`, `attribute_hierarchy`; their K - 2 policies are trained only
    then). With `dataset.metadata["families"]` it reports cluster purity, and with `ground_truth`
    [Q] (the responsible family per query) the fraction of queries attributed to a cluster or
    group whose majority family is that family (`majority_family`, a tie counts as a miss).
    Writes the report when `out_dir` is given."""
    import gymnasium as gym

    from rlx.algos.traj_encoders import train_encoder

    check_config(cfg, action_space)
    store = dataset.episodes
    t0 = time.time()
    encoder, emb, enc_info = train_encoder(store, action_space, cfg.encoder, cfg.window, cfg.stride, cfg.embed_dim,
                                           cfg.encoder_steps, lr=cfg.encoder_lr, seed=seed)
    labels_np, bic = xmeans(emb, cfg.k_min, cfg.k_max, seed)
    labels = torch.as_tensor(labels_np)
    K = int(labels.max()) + 1
    log(f"attribution: {store.num_episodes} trajectories -> {K} clusters (BIC over k: "
        f"{ {k: round(v, 1) for k, v in bic.items()} }) in {time.time() - t0:.0f}s")
    groups, tree_levels = ward_hierarchy(emb, labels)
    levels = tree_levels if cfg.hierarchy else tree_levels[:1]
    d_orig = data_embedding(emb, cfg.temperature)
    drop = [torch.isin(labels, torch.tensor(g)) for g in groups]
    dist = torch.tensor([wasserstein_1d(d_orig, data_embedding(emb[~m], cfg.temperature)) for m in drop])
    hidden = tuple(cfg.learner_hidden)
    discrete = isinstance(action_space, gym.spaces.Discrete)

    def train_groups(ids: list[int]) -> dict[int, Any]:
        t1 = time.time()
        jobs = [ExplanationJob(j, store if j < 0 else complement(store, labels, groups[j]), observation_space,
                               action_space, cfg.learner, cfg.learner_steps, cfg.learner_batch, hidden, seed)
                for j in ids]
        trained = train_explanations(jobs, cfg.executor, cfg.n_jobs)
        log(f"attribution: {len(ids)} explanation policies ({cfg.learner}, executor={cfg.executor}) "
            f"in {time.time() - t1:.0f}s")
        return trained

    learners = train_groups(list(range(-1, K)))
    acts = {j: learners[j].act(queries, deterministic=True)["action"].float() for j in learners}
    attributed, level = attribute_hierarchy(acts[-1], torch.stack([acts[j] for j in range(K)]), dist[:K],
                                            levels[:1], discrete, cfg.top_k, cfg.action_tol)
    if len(levels) > 1 and (attributed < 0).any():  # some decision no single cluster explains: go up the tree
        learners.update(train_groups(list(range(K, len(groups)))))
        acts.update({j: learners[j].act(queries, deterministic=True)["action"].float() for j in range(K, len(groups))})
        attributed, level = attribute_hierarchy(acts[-1], torch.stack([acts[j] for j in range(len(groups))]), dist,
                                                levels, discrete, cfg.top_k, cfg.action_tol)
    trained = [j for j in range(len(groups)) if j in learners]
    alt = torch.stack([acts[j] for j in trained])
    s0 = store.data["obs"][store.ptr[:-1]]
    if discrete:
        contrast = (alt != acts[-1]).float().mean(1).tolist()
    else:
        contrast = (alt - acts[-1]).flatten(2).norm(dim=-1).mean(1).tolist()
    clusters = [{"cluster": j, "members": list(groups[j]), "trajectories": int(drop[j].sum()),
                 "initial_state_value": initial_state_value(learners[j], s0), "action_contrast": contrast[i],
                 "data_distance": float(dist[j]), "attribution_frequency": float((attributed == j).float().mean())}
                for i, j in enumerate(trained)]
    result = {"config": asdict(cfg), "seed": seed, "num_clusters": K, "bic": {str(k): v for k, v in bic.items()},
              "labels": labels.tolist(), "encoder": enc_info, "groups": [list(g) for g in groups], "levels": levels,
              "original": {"initial_state_value": initial_state_value(learners[-1], s0)}, "clusters": clusters,
              "queries": queries.tolist(), "query_actions": acts[-1].tolist(),
              "cluster_actions": alt.tolist(), "attributed": attributed.tolist(), "attribution_level": level.tolist(),
              "no_attribution_rate": float((attributed < 0).float().mean()),
              "merged_attribution_rate": float((level > 0).float().mean())}
    families = dataset.metadata.get("families")
    if families is not None:
        families = torch.as_tensor(families)
        result["purity"] = cluster_purity(labels, families)
        cut = next((ids for ids in tree_levels if len(ids) == int(families.max()) + 1), None)
        if cut is not None:  # the hierarchy's partition into as many groups as families
            result["hierarchy_purity"] = cluster_purity(sum(i * drop[g].long() for i, g in enumerate(cut)), families)
        majority = torch.tensor([majority_family(families[m], int(families.max()) + 1) for m in drop])
        result["cluster_family"] = majority[:K].tolist()
        result["group_family"] = majority.tolist()
        result["family_names"] = dataset.metadata.get("family_names")
        if ground_truth is not None:
            result["ground_truth"] = ground_truth.tolist()
            hit = (attributed >= 0) & (majority[attributed.clamp_min(0)] == ground_truth)
            result["ground_truth_accuracy"] = float(hit[ground_truth >= 0].float().mean())
    if out_dir is not None:
        from rlx.algos.attribution_report import write_report

        write_report(Path(out_dir), result, dataset, emb, cfg.figures)
    return result


def majority_family(families: torch.Tensor, num_families: int) -> int:
    """The family most trajectories of a group belong to; -1 on a tie (no majority family)."""
    counts = torch.bincount(families, minlength=num_families)
    return int(counts.argmax()) if int((counts == counts.max()).sum()) == 1 else -1


def cluster_purity(labels: torch.Tensor, families: torch.Tensor) -> float:
    """Fraction of trajectories whose cluster's majority family is their own family."""
    hits = 0
    for j in labels.unique():
        hits += int(torch.bincount(families[labels == j]).max())
    return hits / labels.numel()


def load_attribution_data(cfg: AttributionConfig, seed: int):
    """(dataset, observation space, action space, query states, ground truth or None) for `algo.dataset`."""
    import gymnasium as gym

    if cfg.dataset == "gridworld":
        from rlx.envs.gridworld import GridWorld, lobby_cells, make_gridworld_dataset, planted_responsible

        data = make_gridworld_dataset(tuple(cfg.grid_episodes), cfg.grid_noise, seed)
        env = GridWorld()
        truth = torch.tensor([planted_responsible(c) for c in lobby_cells()])
        return data, env.observation_space, env.action_space, torch.tensor(lobby_cells()), truth
    from rlx.envs.datasets import load_dataset

    data = load_dataset(cfg.dataset)
    env_id = data.metadata.get("env_id")
    if not env_id:
        raise ValueError(f"dataset {cfg.dataset!r} has no env_id in its metadata; attribution needs its spaces")
    env = gym.make(env_id)
    obs = data.episodes.data["obs"]
    pick = torch.randperm(obs.shape[0], generator=torch.Generator().manual_seed(seed))[:cfg.num_queries]
    spaces = env.observation_space, env.action_space
    env.close()
    return data, *spaces, obs[pick].float(), None


@register("attribution", AttributionConfig,
          "Trajectory-cluster attribution (Deshmukh et al. 2023): which trajectories caused a decision")
def train(ctx) -> dict[str, Any]:
    """`python -m rlx.train algo=attribution [algo.dataset=...]`: the whole pipeline, report in the run dir."""
    from rlx.core.errors import ConfigError

    cfg, seed = ctx.cfg.algo, ctx.cfg.seed
    try:
        check_config(cfg)
        data, obs_space, act_space, queries, truth = load_attribution_data(cfg, seed)
        check_config(cfg, act_space)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    result = run_attribution(data, cfg, obs_space, act_space, queries, seed, ctx.run_dir, truth)
    summary = {"eval/num_clusters": result["num_clusters"], "eval/no_attribution_rate": result["no_attribution_rate"],
               "eval/initial_state_value": result["original"]["initial_state_value"]}
    if "purity" in result:
        summary["eval/purity"] = result["purity"]
    summary["eval/merged_attribution_rate"] = result["merged_attribution_rate"]
    if "ground_truth_accuracy" in result:
        summary["eval/ground_truth_accuracy"] = result["ground_truth_accuracy"]
    ctx.logger.log(0, summary)
    ctx.logger.write_summary(summary)
    return summary

