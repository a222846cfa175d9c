"""Report of an attribution run (`rlx.algos.attribution`): `attribution.json` (everything),
`report.md` (per-cluster table), `clusters.png` (trajectory embeddings in 2-D PCA, by cluster)
and `query_<i>.png` (a query state next to trajectories of its attributed cluster; on the grid
world over the maze, otherwise in the plane of observation dimensions 0 and 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlx.core.checkpoint import atomic_write

__all__ = ["cluster_table", "write_report"]


def cluster_table(result: dict[str, Any]) -> str:
    """Markdown table: one row for the original policy, one per cluster and one per trained
    merged group of the cluster hierarchy."""
    fam, names = result.get("group_family", result.get("cluster_family")), result.get("family_names")
    head = "| policy | trajectories | majority family | initial-state value | action contrast | data distance | attribution freq. |"
    lines = [head, "|" + "---|" * 7]
    n = len(result["labels"])
    lines.append(f"| original | {n} | - | {result['original']['initial_state_value']:.3f} | - | 0 | - |")
    for c in result["clusters"]:
        f = None if fam is None else fam[c["cluster"]]
        family = "-" if f is None else "tie" if f < 0 else names[f] if names else str(f)
        members = c.get("members", [c["cluster"]])
        name = f"cluster {c['cluster']}" if len(members) == 1 else f"merged group {c['cluster']} = {members}"
        lines.append(f"| without {name} | {c['trajectories']} | {family} | "
                     f"{c['initial_state_value']:.3f} | {c['action_contrast']:.3f} | {c['data_distance']:.2e} | "
                     f"{c['attribution_frequency']:.3f} |")
    return "\n".join(lines)


def _summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"* clusters: {result['num_clusters']} (BIC by k: "
             + ", ".join(f"{k}: {v:.1f}" for k, v in result["bic"].items()) + ")",
             f"* queries without attribution: {result['no_attribution_rate']:.3f}"]
    if "merged_attribution_rate" in result:
        lines.append(f"* queries attributed to a merged group (no single cluster changes them): "
                     f"{result['merged_attribution_rate']:.3f}")
    if "purity" in result:
        lines.append(f"* cluster purity vs planted families: {result['purity']:.3f}")
    if "hierarchy_purity" in result:
        lines.append(f"* purity of the hierarchy's cut into as many groups as families: {result['hierarchy_purity']:.3f}")
    if "ground_truth_accuracy" in result:
        lines.append(f"* queries attributed to the planted responsible family: {result['ground_truth_accuracy']:.3f}")
    return lines


def write_report(out_dir: Path, result: dict[str, Any], dataset, embeddings: torch.Tensor, figures: int = 4) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    atomic_write(out_dir / "attribution.json", lambda f: f.write(text.encode()))
    md = "\n".join(["# Attribution report", "", *_summary_lines(result), "", cluster_table(result), ""])
    atomic_write(out_dir / "report.md", lambda f: f.write(md.encode()))
    _plot_clusters(out_dir / "clusters.png", embeddings, torch.tensor(result["labels"]))
    store = dataset.episodes
    labels = torch.tensor(result["labels"])
    attributed = [(i, a) for i, a in enumerate(result["attributed"]) if a >= 0]
    grid = dataset.metadata.get("env_id") == "rlx/GridWorld-v0"
    groups = result.get("groups") or [[j] for j in range(result["num_clusters"])]
    for i, cluster in attributed[:figures]:
        episodes = torch.nonzero(torch.isin(labels, torch.tensor(groups[cluster]))).squeeze(-1)[:5].tolist()
        name = f"cluster {cluster}" if len(groups[cluster]) == 1 else f"merged group {cluster} = {groups[cluster]}"
        _plot_query(out_dir / f"query_{i}.png", store, episodes, result["queries"][i], name, grid)


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _plot_clusters(path: Path, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = embeddings.double() - embeddings.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    xy = (x @ v[:2].T).numpy()  # [E, D] -> [E, 2] principal components
    fig, ax = plt.subplots(figsize=(4.5, 4))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels.numpy(), cmap="tab10", s=12)
    ax.legend(*sc.legend_elements(), title="cluster", fontsize=7)
    ax.set(title="trajectory embeddings (PCA)", xlabel="PC 1", ylabel="PC 2")
    _save(fig, path)
    plt.close(fig)


def _plot_query(path: Path, store, episodes: list[int], query: list, cluster: str, grid: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 4))
    if grid:
        from rlx.envs.gridworld import LAYOUT

        walls = np.array([[ch == "#" for ch in row] for row in LAYOUT], dtype=float)
        ax.imshow(walls, cmap="Greys", vmin=0, vmax=1.5)
        for ch, color in (("H", "red"), ("M", "saddlebrown"), ("G", "green")):
            r, c = next((r, row.index(ch)) for r, row in enumerate(LAYOUT) if ch in row)
            ax.text(c, r, ch, ha="center", va="center", color=color, fontweight="bold")
    for k, e in enumerate(episodes):
        obs = store.episode(e)["obs"].float().flatten(1)
        xy = obs[:, [1, 0]] if grid else obs[:, :2]  # grid: (col, row); else observation dims 0 and 1
        jitter = 0.08 * (k - len(episodes) / 2) if grid else 0.0
        ax.plot(xy[:, 0] + jitter, xy[:, 1] + jitter, "-o", ms=2, lw=1, alpha=0.8, label=f"trajectory {e}")
    q = np.asarray(query, dtype=float).reshape(-1)
    qx, qy = (q[1], q[0]) if grid else (q[0], q[1])
    ax.plot(qx, qy, "*", color="gold", ms=18, mec="black", label="query state")
    ax.set_title(f"query {np.round(q, 2).tolist()}: attributed to {cluster}")
    if not grid:
        ax.set(xlabel="obs[0]", ylabel="obs[1]")
    ax.legend(fontsize=6, loc="best", markerscale=0.5)
    _save(fig, path)
    plt.close(fig)
