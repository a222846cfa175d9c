"""Throughput of GFlowNet training: rlx vs torchgfn on HyperGrid, and batched molecule sampling.

* HyperGrid (D=4, H=8, TB, uniform P_B, MLP 2 x 256 ReLU, Adam lr 1e-3 / log Z 0.1): trajectories
  per second of process CPU time of full training iterations (sample a batch, loss, backward,
  step), same batch size and network on both sides. torchgfn 2.4.1 runs in its own venv (it pins
  numpy<2) as one `scripts/_torchgfn_hypergrid.py --serve` process answering timed chunks, so the
  two sides interleave chunk by chunk (`--repeats` chunks of `--iters` iterations each, the order
  alternating) after 5 untimed warm-up iterations each. Correctness first: torchgfn is handed
  rlx's initial policy weights and its log P_F over all 4096 grid points must equal rlx's (same
  env, encoding, masks and network), and rlx's sampler must follow its own exact terminal
  distribution within sampling noise.
* Molecule envs (GINE policy; atom env, fragment env with the BRICS library and QED x SA x MW,
  fragment env with the packaged 105-block library and sEH proxy): molecules per second of CPU
  time of batched sampling (64 at a time, the reward of every terminal molecule included) vs the
  same env and policy sampling one molecule at a time, interleaved repeats; correct when every
  molecule on both sides is valid and has a finite log-reward.

Prints one line per case (`--json`: one JSON object, see scripts/_speed_json.py).
    OMP_NUM_THREADS=1 python scripts/bench_gflownet.py [--repeats 5] [--iters 20] [--batch 16 64] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _speed_json import emit, ratio_line  # noqa: E402
from gflownet_common import SIDE, torchgfn_python  # noqa: E402

from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy  # noqa: E402
from rlx.envs.hypergrid import HyperGrid, l1_distance  # noqa: E402

WARMUP = 5


class TorchgfnServer:
    """scripts/_torchgfn_hypergrid.py --serve: one JSON request per line, one reply per line."""

    def __init__(self, batch: int, seed: int):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([torchgfn_python(), str(SIDE), "--serve", "--objective", "tb", "--batch", str(batch),
                                      "--seed", str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"torchgfn side exited (code {self.proc.wait()}); run it alone to see why: {SIDE} --serve")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def same_policy_as_torchgfn(learner: GFlowNet, env: HyperGrid, server: TorchgfnServer) -> bool:
    """Hand rlx's policy weights to torchgfn (its last layer puts exit last and has no log-flow
    output) and compare log P_F over every grid point."""
    model = learner.model
    D = env.ndim
    head_w, head_b = model.head.weight.detach(), model.head.bias.detach()
    order = [*range(1, D + 1), 0]  # torchgfn: +e_0 .. +e_{D-1}, exit
    state = {"trunk.0.weight": model.trunk[0].weight, "trunk.0.bias": model.trunk[0].bias,
             "trunk.2.weight": model.trunk[2].weight, "trunk.2.bias": model.trunk[2].bias,
             "last_layer.weight": head_w[order], "last_layer.bias": head_b[order]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pf.pt"
        torch.save({k: v.detach().clone() for k, v in state.items()}, path)
        server.ask(load=str(path))
    theirs = torch.tensor(server.ask(table=1)["table"])
    ours = learner.policy_log_probs(env.all_states())
    finite = torch.isfinite(ours)
    return bool(torch.equal(finite, torch.isfinite(theirs)) and (ours[finite] - theirs[finite]).abs().max() < 1e-5)


def sampler_follows_its_policy(learner: GFlowNet, env: HyperGrid, n: int) -> bool:
    exact = env.terminal_distribution(learner.policy_log_probs)
    _, terminal, _ = learner.sample(n)
    err = l1_distance(env.empirical_distribution(terminal), exact)
    draws = torch.multinomial(exact, n, replacement=True)  # the sampling noise of a perfect sampler
    noise = l1_distance(torch.bincount(draws, minlength=exact.numel()).float() / n, exact)
    return err < 1.3 * noise + 0.01


def hypergrid(batch: int, iters: int, repeats: int, quick: bool) -> dict:
    torch.manual_seed(0)
    env = HyperGrid(4, 8)
    learner = GFlowNet(GFlowNetConfig(batch_size=batch), env, MLPPolicy(env, 256, 2))
    server = TorchgfnServer(batch, seed=0)
    correct = same_policy_as_torchgfn(learner, env, server) and sampler_follows_its_policy(
        learner, env, 5_000 if quick else 20_000)

    def rlx_chunk(k: int) -> float:
        start = time.process_time()
        for _ in range(k):
            store, _, log_r = learner.sample(batch)
            learner.update(store.to_batch(log_reward=log_r))
        return time.process_time() - start

    rlx_chunk(WARMUP)
    server.ask(iters=WARMUP)
    ours, theirs = [], []
    for r in range(repeats):  # alternating order, so a load change hits both sides alike
        if r % 2:
            theirs.append(server.ask(iters=iters)["cpu_s"])
            ours.append(rlx_chunk(iters))
        else:
            ours.append(rlx_chunk(iters))
            theirs.append(server.ask(iters=iters)["cpu_s"])
    server.close()
    rate = iters * batch
    line = ratio_line(f"gflownet_hypergrid_tb_batch{batch}", [rate / t for t in ours], [rate / t for t in theirs],
                      "trajectories/s", correct)
    line["peer_name"] = "torchgfn 2.4.1"
    return line


def molecules(case: str, env, batch: int, total: int, repeats: int) -> dict:
    """Molecules/s of batched sampling (`batch` at a time) vs one molecule at a time, same policy."""
    from rlx.models.graph_nets import graph_policy

    torch.manual_seed(0)
    learner = GFlowNet(GFlowNetConfig(), env, graph_policy(env, 64, 3, "gine"))
    correct = True

    def chunk(n: int, count: int) -> float:
        nonlocal correct
        start = time.process_time()
        for _ in range(count):
            _, terminal, log_r = learner.sample(n)
            correct &= all(env.smiles(terminal)) and bool(torch.isfinite(log_r).all())
        return time.process_time() - start

    chunk(batch, 1), chunk(1, 2)  # warm-up
    n_seq = max(total // 8, 8)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(total // batch * batch / chunk(batch, total // batch))
        theirs.append(n_seq / chunk(1, n_seq))
    line = ratio_line(case, ours, theirs, "molecules/s", correct)
    line["peer_name"] = "the same sampler, one molecule at a time (reward included on both sides)"
    return line


def molecule_cases() -> list[tuple[str, object]]:
    from rlx.envs.fragments import FragmentMoleculeEnv
    from rlx.envs.molecules import AtomMoleculeEnv

    return [("gflownet_atom_env_sampling", AtomMoleculeEnv(max_atoms=9)),
            ("gflownet_fragment_brics_qed_sa_mw_sampling", FragmentMoleculeEnv(reward="qed_sa_mw")),
            ("gflownet_fragment_105_blocks_seh_sampling", FragmentMoleculeEnv(library="PDB_105", reward="seh"))]
    # the 105-block library and the sEH weights are package data (rlx/data/gflownet_seh)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=20, help="training iterations per timed chunk")
    p.add_argument("--batch", type=int, nargs="*", default=[16, 64], help="HyperGrid batch sizes (none: skip)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--molecules", type=int, default=256, help="molecules per batched chunk (0: skip)")
    p.add_argument("--json", action="store_true", help="only the JSON lines (one per case)")
    p.add_argument("--quick", action="store_true", help="smaller chunks (under 3 minutes in all)")
    a = p.parse_args()
    if a.quick:
        a.iters, a.molecules = min(a.iters, 6), min(a.molecules, 64)
    torch.set_num_threads(1)
    for batch in a.batch:
        emit(hypergrid(batch, a.iters, a.repeats, a.quick), a.json)
    if a.molecules:
        for case, env in molecule_cases():
            emit(molecules(case, env, 64, a.molecules, a.repeats), a.json)


if __name__ == "__main__":
    main()
