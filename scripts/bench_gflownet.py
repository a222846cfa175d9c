"""Throughput of GFlowNet training: rlx vs torchgfn on HyperGrid, and batched molecule sampling.

* HyperGrid (D=4, H=8, TB, uniform P_B, MLP 2 x 256, Adam): trajectories per second of one full
  training iteration (sample a batch, loss, backward, step), same batch size and network on both
  sides; torchgfn 2.4.1 runs in its own venv (it pins numpy<2) as a subprocess.
* Molecule envs (GINE policy; atom env, fragment env with the BRICS library and QED x SA x MW,
  fragment env with the packaged 105-block library and sEH proxy):
  molecules per second of batched sampling (64 at a time) vs the same env and policy stepping
  one molecule at a time.

Correctness is checked before timing. Prints one JSON object per case.
    OMP_NUM_THREADS=1 python scripts/bench_gflownet.py [--iters 100] [--batch 16 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gflownet_common import run_torchgfn  # noqa: E402

from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy  # noqa: E402
from rlx.envs.hypergrid import HyperGrid, l1_distance  # noqa: E402


def rlx_hypergrid(batch: int, iters: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    env = HyperGrid(4, 8)
    learner = GFlowNet(GFlowNetConfig(batch_size=batch), env, MLPPolicy(env, 256, 2))
    # correctness: sampled terminal states follow the policy's exact terminal distribution
    exact = env.terminal_distribution(learner.policy_log_probs)
    _, terminal, _ = learner.sample(20_000)
    err = l1_distance(env.empirical_distribution(terminal), exact)
    draws = torch.multinomial(exact, 20_000, replacement=True)  # the sampling noise of a perfect sampler
    noise = l1_distance(torch.bincount(draws, minlength=exact.numel()).float() / 20_000, exact)
    assert err < 1.3 * noise + 0.01, f"rlx sampler disagrees with its exact distribution (L1 {err:.3f} vs noise {noise:.3f})"
    elapsed = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        store, _, log_r = learner.sample(batch)
        learner.update(store.to_batch(log_reward=log_r))
        elapsed += time.perf_counter() - t0
    return iters * batch / elapsed


def molecules(case: str, env, batch: int, total: int) -> dict:
    """Molecules/s of batched sampling (`batch` at a time) vs one molecule at a time, same policy."""
    from rlx.models.graph_nets import graph_policy

    torch.manual_seed(0)
    learner = GFlowNet(GFlowNetConfig(), env, graph_policy(env, 64, 3, "gine"))
    _, terminal, _ = learner.sample(batch)
    assert all(s for s in env.smiles(terminal)), "invalid molecule"
    t0 = time.perf_counter()
    for _ in range(total // batch):
        learner.sample(batch)
    batched = total // batch * batch / (time.perf_counter() - t0)
    n_seq = max(total // 8, 8)
    t0 = time.perf_counter()
    for _ in range(n_seq):
        learner.sample(1)
    sequential = n_seq / (time.perf_counter() - t0)
    return {"case": case, "batch": batch, "rlx_molecules_per_s": round(batched, 1),
            "one_at_a_time_molecules_per_s": round(sequential, 1), "ratio": round(batched / sequential, 2),
            "note": "includes the reward of each terminal molecule (RDKit; sEH proxy for frag_seh)"}


def molecule_cases() -> list[tuple[str, object]]:
    from rlx.envs.fragments import FragmentMoleculeEnv
    from rlx.envs.molecules import AtomMoleculeEnv

    cases = [("atom_env_sampling", AtomMoleculeEnv(max_atoms=9)),
             ("fragment_env_brics_qed_sa_mw_sampling", FragmentMoleculeEnv(reward="qed_sa_mw")),
             ("fragment_env_105_blocks_seh_sampling", FragmentMoleculeEnv(library="PDB_105", reward="seh"))]
    return cases  # the 105-block library and the sEH weights are package data (rlx/data/gflownet_seh)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--batch", type=int, nargs="*", default=[16, 64], help="HyperGrid batch sizes (none: skip)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--molecules", type=int, default=512)
    a = p.parse_args()
    torch.set_num_threads(1)
    for batch in a.batch:
        ours, theirs = [], []
        for r in range(a.repeats):  # interleaved so load changes hit both sides alike
            ours.append(rlx_hypergrid(batch, a.iters, seed=r))
            theirs.append(run_torchgfn(objective="tb", batch=batch, iters=a.iters, seed=r)["trajectories_per_s"])
        best_ours, best_theirs = max(ours), max(theirs)
        print(json.dumps({"case": "hypergrid_d4_h8_tb", "batch": batch, "iters": a.iters,
                          "rlx_trajectories_per_s": round(best_ours, 1), "torchgfn_trajectories_per_s": round(best_theirs, 1),
                          "ratio": round(best_ours / best_theirs, 2)}), flush=True)
    for case, env in molecule_cases():
        print(json.dumps(molecules(case, env, 64, a.molecules)), flush=True)


if __name__ == "__main__":
    main()
