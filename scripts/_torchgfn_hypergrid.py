"""torchgfn side of scripts/bench_gflownet.py and scripts/gflownet_hypergrid.py.

Runs in its own virtual environment (torchgfn pins numpy<2); imports nothing from rlx. Trains
torchgfn 2.x on HyperGrid with the same batch, MLP (2 hidden layers), uniform P_B and
optimizer settings as the rlx side, and prints one JSON object: trajectories/s of
sample + loss + step, and, at the requested checkpoints, the learned forward policy's
log-probabilities over all grid points (rlx computes the exact terminal distribution from them).

With `--serve` it instead answers JSON requests, one per stdin line, so that a benchmark can
interleave it with rlx in small timed chunks without restarting Python:
  {"load": PATH}  load forward-policy weights saved by rlx (a state dict of plain tensors, read
                  with weights_only=True; keys trunk.0/trunk.2/last_layer, actions in torchgfn order)
  {"table": 1}    reply {"table": log P_F over every grid point, rlx action order}
  {"iters": K}    run K training iterations; reply {"cpu_s", "wall_s", "loss"} (process CPU time)
"""

import argparse
import json
import sys
import time

import torch
from gfn.estimators import DiscretePolicyEstimator, ScalarEstimator
from gfn.gflownet import DBGFlowNet, FMGFlowNet, SubTBGFlowNet, TBGFlowNet
from gfn.gym import HyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.utils.modules import MLP, DiscreteUniform

p = argparse.ArgumentParser()
p.add_argument("--objective", default="tb")
p.add_argument("--ndim", type=int, default=4)
p.add_argument("--height", type=int, default=8)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--iters", type=int, default=100)
p.add_argument("--hidden", type=int, default=256)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--checkpoints", default="")  # comma-separated iteration counts to dump P_F tables at
p.add_argument("--epsilon", type=float, default=0.0)
p.add_argument("--warmup", type=int, default=5)  # untimed iterations first (allocator, lazy init)
p.add_argument("--serve", action="store_true")  # answer JSON requests on stdin (see the docstring)
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(1)

env = HyperGrid(ndim=a.ndim, height=a.height, reward_fn_kwargs={"R0": 0.1, "R1": 0.5, "R2": 2.0}, validate_modes=False)
pre = KHotPreprocessor(height=a.height, ndim=a.ndim)
n_actions = env.n_actions
if a.objective == "fm":
    logF = DiscretePolicyEstimator(MLP(pre.output_dim, n_actions, a.hidden, 2), n_actions, preprocessor=pre)
    gfn = FMGFlowNet(logF)
    pf = logF
    params = [{"params": gfn.parameters(), "lr": a.lr}]
else:
    pf_module = MLP(pre.output_dim, n_actions, a.hidden, 2)
    pf = DiscretePolicyEstimator(pf_module, n_actions, preprocessor=pre)
    pb = DiscretePolicyEstimator(DiscreteUniform(n_actions - 1), n_actions, preprocessor=pre, is_backward=True)
    if a.objective == "tb":
        gfn = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
        params = [{"params": gfn.pf_pb_parameters(), "lr": a.lr}, {"params": gfn.logz_parameters(), "lr": 0.1}]
    else:
        logF = ScalarEstimator(MLP(pre.output_dim, 1, a.hidden, 2), preprocessor=pre)
        gfn = DBGFlowNet(pf=pf, pb=pb, logF=logF) if a.objective == "db" else \
            SubTBGFlowNet(pf=pf, pb=pb, logF=logF, weighting="geometric_within", lamda=0.9)
        params = [{"params": gfn.parameters(), "lr": a.lr}]
opt = torch.optim.Adam(params)


def pf_table():
    """log P_F over every grid point, index = sum_d x_d H^d, actions ordered (stop, +e_0, ..., +e_{D-1})."""
    idx = torch.arange(a.height ** a.ndim)
    pos = torch.stack([(idx // a.height ** d) % a.height for d in range(a.ndim)], 1)
    states = env.states_from_tensor(pos)
    with torch.no_grad():
        logits = pf.module(pre(states))
    logits = logits.masked_fill(~states.forward_masks, float("-inf")).log_softmax(-1)
    return torch.cat([logits[:, -1:], logits[:, :-1]], 1).tolist()  # torchgfn puts exit last


def iteration():
    """One training iteration: sample a batch, loss, backward, Adam step; returns the loss."""
    traj = gfn.sample_trajectories(env, n=a.batch, save_logprobs=True, epsilon=a.epsilon)
    training = gfn.to_training_samples(traj)
    opt.zero_grad()
    loss = gfn.loss(env, training, recalculate_all_logprobs=a.epsilon > 0)
    loss.backward()
    opt.step()
    return loss


def serve():
    for line in sys.stdin:
        req = json.loads(line)
        if "load" in req:
            pf_module.load_state_dict(torch.load(req["load"], weights_only=True))
            reply = {"ok": True}
        elif "table" in req:
            reply = {"table": pf_table()}
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(req["iters"]):
                loss = iteration()
            reply = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0, "loss": float(loss.detach())}
        print(json.dumps(reply), flush=True)


if a.serve:
    serve()
    sys.exit(0)
checkpoints = sorted(int(c) for c in a.checkpoints.split(",") if c)
tables = {}
t_train = 0.0
for it in range(1 - a.warmup, a.iters + 1):
    t0 = time.perf_counter()
    loss = iteration()
    if it >= 1:
        t_train += time.perf_counter() - t0
    if it in checkpoints:
        tables[it] = pf_table()
print(json.dumps({"impl": "torchgfn", "objective": a.objective, "trajectories_per_s": a.iters * a.batch / t_train,
                  "final_loss": float(loss.detach()), "tables": tables}))
