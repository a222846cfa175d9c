"""Mutation testing of rlx's numerics and learning code with mutmut, one module at a time.

Each module is mutated alone in a scratch copy of the tree, and each of its mutants runs only
the tests that can kill it (`MODULES` below; mutmut narrows further to the tests that reach the
mutated function). The result is a markdown table of per-module scores and the list of
surviving mutants; survivors matched by `EQUIVALENT` are reported as equivalent (with the
reason) and left out of the score's denominator.

    python scripts/mutation.py                         # every module, 2 workers (--jobs 1: 31 min on 2 shared cores)
    python scripts/mutation.py rlx/envs/rewards.py     # some modules
    python scripts/mutation.py --tree /tmp/old --out before.md rlx/envs/rewards.py   # another checkout

Settings shared by every module (pytest flags, timeouts) are the `[tool.mutmut]` section of
pyproject.toml; this script replaces its `only_mutate` and `pytest_add_cli_args_test_selection`
per module. Nothing is written in the tree itself (only under --work and --out).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the tests that can kill its mutants: paths, pytest node ids (`file::test`) or pytest
# arguments (`--deselect=` leaves out a slow learning test that a unit test of the same code replaces;
# paths whose file does not exist in --tree are skipped); fast unit tests only, so that the whole
# table runs in under an hour on 2 cores
MODULES: dict[str, list[str]] = {
    "rlx/kernels/reference.py": ["tests/kernels/test_time_ops.py", "tests/kernels/test_segment_ops.py", "tests/kernels/test_scan_paths.py",
                                 "tests/kernels/test_precision_and_grad_paths.py"],
    "rlx/kernels/ops.py": ["tests/kernels/test_ops_checks.py", "tests/kernels/test_precision_and_grad_paths.py",
                           "tests/kernels/test_dispatch.py::test_auto_runs_the_twin_on_cpu",
                           "tests/kernels/test_dispatch.py::test_env_var_is_read_at_call_time",
                           "tests/kernels/test_dispatch.py::test_gae_stays_the_function_after_importing_its_triton_module"],
    "rlx/envs/rewards.py": ["tests/offline/test_rewards.py", "tests/offline/test_reward_transform_exact.py"],
    "rlx/core/buffers.py": ["tests/core/test_buffers_exact.py", "tests/core/test_buffers.py", "tests/core/test_speed_paths.py",
                            "tests/core/test_loop_next_obs.py"],
    "rlx/core/offpolicy.py": ["tests/offpolicy/test_loop.py::test_buffer_keeps_final_obs_and_terminated_apart_from_truncated",
                              "tests/offpolicy/test_loop.py::test_warmup_is_random_in_bounds_and_updates_follow_utd",
                              "tests/offpolicy/test_loop.py::test_budget_is_exact_when_not_a_multiple_of_the_iteration",
                              "tests/core/test_offpolicy_loop.py"],
    # tests/test_resume.py is left out: it trains in a subprocess, which mutmut's per-function test map never
    # sees (no mutant would run it); test_loop_rules resumes in-process
    "rlx/core/loops.py": ["tests/core/test_loop_rules.py", "tests/core/test_loop_more.py", "tests/core/test_loop_next_obs.py", "tests/offline/test_loop_io.py",
                          "tests/core/test_speed_paths.py::test_rollout_columns_are_preallocated_and_reused"],
    "rlx/core/learner.py": ["tests/core/test_learner_helpers.py", "tests/offline/test_loss_signs.py"],
    "rlx/algos/offline_ac.py": ["tests/offline/test_losses.py", "tests/offline/test_loss_signs.py",
                                "tests/offline/test_update_rules.py"],
    "rlx/algos/ppo.py": ["tests/algos/test_ppo.py", "tests/algos/test_ppo_signs.py", "tests/algos/test_update_rules.py",
                         "tests/algos/test_ppo_fused_loss.py", "tests/algos/test_ppo_network.py::test_network_starts_as_the_separate_critic_and_actor",
                         "--deselect=tests/algos/test_ppo.py::test_ppo_learns_cartpole"],
    "rlx/algos/rlhf.py": ["tests/cppo/test_rlhf_kl.py", "tests/cppo/test_cppo_weights.py",
                          "tests/cppo/test_update_rules.py"],
    "rlx/algos/ddpo.py": ["tests/ddpo/test_ddpo.py", "tests/ddpo/test_ddpo_signs.py", "tests/ddpo/test_update_rules.py",
                          "tests/ddpo/test_update_exact.py",
                          "--deselect=tests/ddpo/test_ddpo.py::test_short_run_improves_compressibility",
                          "--deselect=tests/ddpo/test_ddpo.py::test_cli_config_and_training_run",
                          "--deselect=tests/ddpo/test_ddpo.py::test_alignment_classifier_reads_real_digits"],
    "rlx/algos/gflownet.py": ["tests/gflownet/test_hypergrid.py", "tests/gflownet/test_loss_numbers.py", "tests/gflownet/test_sampler.py",
                              "tests/algos/test_gflownet_update.py",
                              "--deselect=tests/gflownet/test_hypergrid.py::test_tiny_hypergrid_learns_target",
                              "--deselect=tests/gflownet/test_hypergrid.py::test_cli_trains_and_writes_summary",
                              "--deselect=tests/gflownet/test_hypergrid.py::test_evaluation_does_not_change_training"],
    "rlx/algos/gflownet_sampler.py": ["tests/gflownet/test_sampler.py", "tests/gflownet/test_hypergrid.py",
                                      "tests/algos/test_gflownet_update.py", "tests/gflownet/test_loss_numbers.py",
                                      "--deselect=tests/gflownet/test_hypergrid.py::test_tiny_hypergrid_learns_target",
                                      "--deselect=tests/gflownet/test_hypergrid.py::test_cli_trains_and_writes_summary",
                                      "--deselect=tests/gflownet/test_hypergrid.py::test_evaluation_does_not_change_training"],
    "rlx/algos/hilp.py": ["tests/hilp/test_hilp.py", "tests/hilp/test_phi_target.py", "tests/hilp/test_update_rules.py",
                          "tests/hilp/test_update_exact.py",
                          "--deselect=tests/hilp/test_hilp.py::test_tiny_run_improves_goal_reaching",
                          "--deselect=tests/hilp/test_hilp.py::test_bad_config_is_one_line",
                          "--deselect=tests/hilp/test_hilp.py::test_zero_shot_run_reports_return_and_fit_per_task"],
    "rlx/algos/attribution.py": ["tests/attribution/test_attribution.py", "tests/attribution/test_selections.py",
                                 "tests/attribution/test_attribution_rules.py",
                                 "--deselect=tests/attribution/test_attribution.py::test_pipeline_on_tiny_gridworld",
                                 "--deselect=tests/attribution/test_attribution.py::test_pipeline_bic_k_with_cluster_hierarchy",
                                 "--deselect=tests/attribution/test_attribution.py::test_encoders_learn"],
    "rlx/algos/cppo.py": ["tests/cppo/test_cppo_weights.py", "tests/cppo/test_rlhf_kl.py", "tests/cppo/test_update_rules.py"],
    "rlx/algos/sac.py": ["tests/offpolicy/test_learners.py", "tests/offpolicy/test_update_rules.py",
                         "--deselect=tests/offpolicy/test_learners.py::test_learns_point_env",
                         "--deselect=tests/offpolicy/test_learners.py::test_sac_solves_pendulum"],
    "rlx/algos/td3.py": ["tests/offpolicy/test_learners.py", "tests/offpolicy/test_update_rules.py",
                         "--deselect=tests/offpolicy/test_learners.py::test_learns_point_env",
                         "--deselect=tests/offpolicy/test_learners.py::test_sac_solves_pendulum"],
    "rlx/envs/hypergrid.py": ["tests/gflownet/test_hypergrid_env.py", "tests/gflownet/test_hypergrid.py::test_env_rules"],
    "rlx/envs/molecules.py": ["tests/gflownet/test_molecule_env_rules.py", "tests/gflownet/test_user_reward.py",
                              "tests/gflownet/test_molecules.py::test_parent_counts_match_brute_force_enumeration",
                              "tests/gflownet/test_molecules.py::test_rewards_and_metrics"],
    "rlx/envs/fragments.py": ["tests/gflownet/test_fragment_env_rules.py", "tests/gflownet/test_fragment_library_and_batches.py",
                              "tests/gflownet/test_fragments.py::test_parent_counts_match_brute_force_enumeration",
                              "tests/gflownet/test_fragments.py::test_library_loading_errors_and_formats",
                              "tests/gflownet/test_fragments.py::test_brics_default_library"],
}

# module -> the functions whose mutants run (`Class.method` or a function name, fnmatch globs); a module
# not listed has every function mutated. The algorithm modules keep to their losses and updates
# (constructors, entry points and state dicts are covered by the learner-protocol and resume tests).
FUNCTIONS: dict[str, list[str]] = {
    "rlx/algos/offline_ac.py": ["expectile_loss", "awr_weights", "ddpg_bc_loss", "td3bc_actor_loss", "Actor.forward",
                                "Actor.dist", "OfflineActorCritic.set_dataset_stats", "OfflineActorCritic.norm_obs",
                                "OfflineActorCritic.to_*", "OfflineActorCritic.q_value", "OfflineActorCritic.*_loss",
                                "OfflineActorCritic.update", "scale_rewards"],
    "rlx/algos/ppo.py": ["clipped_surrogate", "value_loss", "explained_variance", "_NumpyOps.*", "_TorchOps.*",
                         "_head_terms", "_loss_and_grads", "_PPOHeadLoss.forward", "_PPOHeadLoss.backward",
                         "ActorCritic.forward", "PPO.preprocess", "PPO.heads", "PPO._closed_form", "PPO._loss_args", "PPO.loss",
                         "PPO._write_grads", "PPO.update"],
    "rlx/algos/rlhf.py": ["masked_mean", "masked_whiten", "RLHF.token_rewards", "RLHF.rollout", "RLHF._adapt_kl",
                          "RLHF.loss", "RLHF.update"],
    "rlx/algos/cppo.py": ["zscores", "weight_scores", "classify_samples", "_directions", "heuristic_weights",
                          "learned_weights", "retention_loss", "CPPO.retaining", "CPPO.token_rewards", "CPPO.prepare",
                          "CPPO.loss", "CPPO.update"],
    "rlx/algos/ddpo.py": ["score_function_loss", "PerPromptStatTracker.__call__", "DDPO.step_log_prob",
                          "DDPO.advantages", "DDPO.loss", "DDPO.update"],
    "rlx/algos/gflownet.py": ["trajectory_balance", "detailed_balance", "subtrajectory_balance", "flow_matching",
                              "GFlowNet.log_pf_pb", "GFlowNet.loss", "GFlowNet.flow_matching_loss", "GFlowNet.update",
                              "GFlowNet._with_replay"],
    "rlx/algos/hilp.py": ["unit_sphere", "_reward_fit", "infer_latent", "reward_fit_r2", "PhiNetwork.value",
                          "HILP.phi_loss", "HILP.features", "HILP.intrinsic_reward", "HILP.update", "HILP.subgoal",
                          "HILP.goal_latent"],
    "rlx/algos/attribution.py": ["cluster_bic", "ward_hierarchy", "data_embedding", "wasserstein_1d", "complement",
                                 "initial_state_value", "attribute", "attribute_hierarchy", "majority_family",
                                 "cluster_purity"],
    "rlx/algos/sac.py": ["soft_q_target", "SquashedGaussianActor.forward", "SquashedGaussianActor.sample",
                         "BoxScaler.*", "flat_obs", "transitions", "SAC.critic_loss", "SAC.actor_loss", "SAC.alpha_loss", "SAC.update"],
    "rlx/algos/td3.py": ["TD3.act", "TD3.critic_loss", "TD3.actor_loss", "TD3.update"],
}


def mutant_patterns(module: str) -> list[str]:
    """mutmut name patterns (`rlx.algos.sac.xǁSACǁupdate__mutmut_*`) of FUNCTIONS[module], [] for all."""
    dotted = module.removesuffix(".py").replace("/", ".")
    return [f"{dotted}.x" + ("ǁ" + f.replace(".", "ǁ") if "." in f else "_" + f) + "__mutmut_*"
            for f in FUNCTIONS.get(module, [])]


# module -> [(regex searched in the mutated ('+') line or in the mutant's name, why it is equivalent)]
_CPU = "device None is the CPU: not testable on a CPU-only machine"
_OFF_POLICY = [  # the batch casts of SAC's and TD3's update
    (r'\.to\(None', _CPU),
    (r"transitions\(batch, None, self.scale\)|flat_obs\(batch\[\"(next_)?obs\"\], None\)", _CPU),
    (r"return obs.to\(torch.float32\).flatten\(1\)", "without the device argument: the same tensor on the CPU"),
    (r'batch\["\w+"\]\.to\(torch.float32\)', "without the device argument: the same tensor on the CPU"),
]
_Q_GRAD = ("the actor loss's gradient that reaches Q's .grad is dropped by the next optimizer_step's "
           "zero_grad(set_to_none=True); only q_opt steps Q's weights, so the parameters are the same")
EQUIVALENT: dict[str, list[tuple[str, str]]] = {
    "rlx/core/loops.py": [
        (r"key.astype\(None\)|n\[\"key\"\]\.numpy\(\)\.astype\(None\)", "float64 holds the uint32 key words "
         "exactly (numpy casts them back in set_state): the same generator state after the round trip"),
        (r'else "(XXparameterXX|PARAMETER)"\)', "the found item's text is never read, only its rank (found[0])"),
        (r"final = self.run_evaluation\(\) if \(self.evaluate is not None\) or True", "run_evaluation returns {} "
                                                                                     "when there is no evaluate"),
        (r'key.split\("/"\)\[\+1\]', "every key shown has one '/' (eval/return_mean, train/episode_return, the "
                                      "loops' and envs' key metrics): [1] is [-1]"),
        (r"by_device.setdefault\(None, \[\]\)", "grouping by device matters only for tensors on several devices "
                                                "(CPU-only tests: one group either way)"),
        (r"reshape\(rows, -2\)", "numpy reads any negative size as the one unknown dimension"),
        (r'_foreach_norm\(ts, float\("INF"\)\)', "float() parses 'INF' as inf, case-insensitively"),
        (r"self.episode_length = np.zeros\(self.N, (dtype=None)?\)", "float step counters give the same means, and "
         "the lengths are returned cast to int64 (exact below 2^53 steps)"),
    ],
    "rlx/envs/fragments.py": [
        (r"capped.AddAtom\(Chem.Atom\(7\)\)", "the cap takes one single bond whether it is a carbon or a nitrogen; only "
                                             "the stem atoms' valences can fail the sanitization"),
        (r"BRICSDecompose\(mol, (keepNonLeafNodes=None)?\)", "keepNonLeafNodes defaults to False, and None is falsy"),
        (r"DEFAULT_MOLECULES, max_atoms: int = 13\)", "no fragment of the default molecules has exactly 13 heavy atoms: "
         "max_atoms 12 and 13 give the same 41 rows (checked; 15 adds one, which the tests pin)"),
        (r'nbr.GetIsAromatic\(\) or nbr.GetSymbol\(\) != "C"|nbr.GetSymbol\(\) != "(XXCXX|c)"', "an explicit H on an atom "
         "that still computes its implicit hydrogens (aromatic C, aliphatic N/O) only replaces an implicit one: the "
         "same molecule and SMILES (the 41 rows of the default library are identical, checked)"),
        (r'strip\("XX\[\],XX"\)', "strip removes a set of characters at both ends: the atom-order string holds "
                                   "only digits, commas and brackets"),
        (r"x_brics_library__mutmut_89$", "`continue` -> `break` on a duplicate row: a fragment's duplicates come "
         "whole (the same SMILES and stems repeat every first stem, other stems repeat none), so leaving the loop "
         "at the first duplicate skips only duplicates"),
        (r"full = torch.full\(\(n, self.Nb\), -1, (dtype=None)?\)", "an integer fill value gives int64 already"),
        (r"seg = torch.repeat_interleave\(size\)", "repeat_interleave(repeats) alone is "
                                                  "repeat_interleave(arange(len(repeats)), repeats)"),
        (r"first_ok = \(self.min_blocks (< 1|<= 2)\)", "every library fragment has a stem (validate_library), so "
         "num_stems[frag] >= 1 makes first_ok True whatever the min_blocks test"),
        (r"\(n (==|>) 0\)\)\.squeeze\((\+1|-2)\)", "nonzero gives [k, 1]: dim 1 is dim -1, and an unsqueezed [k, 1] "
                                                     "row index reads and writes the same elements"),
        (r"torch.zeros\(B, self.Nb \+ 2, dtype=torch.int64\)", "a column after the roots' column Nb is never read"),
        (r"parent.clamp_min\(-2\)", "parent >= -1 always (-1: root or empty), so both clamps are no-ops"),
        (r"torch.where\(n <= 2, 1, leaf.sum\(1\)\)", "a two-fragment tree has exactly one leaf besides its root"),
        (r"score_mols\(mols, stems\), (dtype=None)?\)", "score_mols returns Python floats: their tensor is float32 "
                                                        "by default"),
    ],
    "rlx/algos/ddpo.py": [
        (r"\.to\(None\)", _CPU),
        (r"ptr_to_segment_ids\(ptr, None\)", "output_size is a size hint"),
        (r'batch\["prompt"\]\[1\]|batch\["adv"\]\[1\]', "prompt and adv are one [N] row expanded over the T "
         "denoising steps (`act`, `update`): row 1 is row 0"),
        (r"torch.argsort\(torch.rand\(N, T, device=self.device\), \)", "argsort's default dim is -1, dim 1 of the "
                                                                         "[N, T] draw"),
    ],
    "rlx/algos/attribution.py": [
        (r"np.bincount\(labels, \)", "minlength only appends zero counts, and the next line drops zero counts"),
        (r"nonzero\(~drop\).squeeze\(\+1\)", "nonzero gives [k, 1]: dim 1 is dim -1"),
        (r'float\("NAN"\)', "float() parses 'NAN' as nan, case-insensitively"),
        (r"group = torch.full\(\(orig.shape\[0\],\), -1, (dtype=None)?\)", "an integer fill value gives int64 already"),
        (r"if \(group (> 0|>= 1)\).all\(\):", "the early exit only skips levels: a later level changes only queries "
                                              "still at -1, and a stricter test just runs those levels"),
        (r"torch.bincount\(families, \)", "minlength only appends zero counts after the last family present: the "
         "argmax and the count of maxima (>= 1) of a non-empty group are the same"),
    ],
    "rlx/algos/offline_ac.py": [
        (r"\.to\(None", _CPU),
        (r"obs.to\(torch.float32\)|batch\[\"\w+\"\]\.to\(torch.float32\)", "without the device argument: the same tensor on the CPU"),
        (r"self.v\((next_)?obs\).squeeze\(\+1\)", "V's output is [B, 1]: dim +1 is dim -1"),
        (r"action.to\(torch.float32\)", "without the device argument: the same tensor on the CPU"),
        (r"pow\(2\).sum\(\+1\)|torch.cat\(\[obs, mu\], \+1\)|squeeze\(\+1\), mu, action",
         "dim +1 is the last dim of the [B, features] tensors here"),
        (r"squeeze\(-2\), mu, action", "Q_1 enters TD3+BC's loss only through means (mean Q_1, mean |Q_1|): "
                                         "[B, 1] and [B] give the same values"),
        (r'reward = batch\["reward"\]\.to\(self.device, (None)?\)', "a float64 reward left uncast makes the "
         "target float64: the loss differs from the float32 one by rounding only"),
        (r"if spread < 1e-8:", "episode returns are float32 sums: no float32 spread equals the float64 1e-8, so < and "
                               "<= agree"),
        (r'q_data = ""', "q_data is read only by AWR, which needs V, and then it is always set to the target minimum")],
    "rlx/algos/cppo.py": [
        (r"\.to\(None\)", _CPU),
        (r"(HIGH_PERFORMANCE|HIGH_VARIANCE|OVERFITTING|NOISY): \(.*\b2\b", "a Table-1 direction of 2 for 1 (or -2 "
         "for -1): only each direction's sign is read (`da > 0`)"),
        (r"if d[ab] >= 0 else", "the directions are +1 or -1, never 0"),
        (r"up = lambda z: \(1 \+ z.abs\(\) - k\).clamp\(None, ub\)", "a sample gets `up` only in a corner category, "
         "where |z| > k, so 1 + |z| - k > 1 and the lower clamp never binds"),
        (r"down = lambda z: \(1 - \(z.abs\(\) - k\)\).clamp\(lb, (None|2)?\)", "a sample gets `down` only in a corner "
         "category, where |z| > k, so 1 - (|z| - k) < 1 and the upper clamp never binds")],
    "rlx/algos/hilp.py": [
        (r"\.to\(None\)", _CPU),
        (r"norm\(dim=\+1|\.sum\(\+1\)|, z\], \+1\)|unsqueeze\(\+1\)\)\.solution|solution.squeeze\(\+1\)",
         "dim +1 is the last dim of these tensors ([B, d] latents and features, [N, 1] least-squares columns)"),
        (r"torch.zeros_like\([fr]\[1\]\)", "zeros_like reads only the shape and dtype, the same for every row"),
        (r"\(r \+ r_mean\).unsqueeze\(-1\)", "with the intercept the columns f - mean f are centred, so a constant "
         "added to the target (2 r_mean instead of 0) is orthogonal to them and w is the same; without it r_mean = 0")],
    "rlx/algos/ppo.py": [
        (r"\.to\(None", _CPU),
        (r"obs = obs.to\(torch.float32\)", "without the device argument: the same tensor on the CPU"),
        (r"self.critic\(mb\[\"obs\"\]\).squeeze\(\+1\)", "the critic's output is [B, 1]: dim +1 is dim -1"),
        (r'float\("NAN"\)', "float() parses 'NAN' as nan, case-insensitively"),
        (r"out.log_softmax\(\+1\)|logp_all.gather\(\+1, index\)|gather\(-1, index\).squeeze\(\+1\)|"
         r"\(p \* logp_all\).sum\(\+1\)|_HALF_LOG_2PI\).sum\(\+1\)|scatter_add_\(\+1, index",
         "dim +1 is the last dim of the fused loss's 2-D [B, A] tensors (and of the gathered [B, 1] column)"),
        (r"action.long\(\).unsqueeze\(\+1\)|rows_h.unsqueeze\(\+1\)|d_logp.unsqueeze\(\+1\)",
         "unsqueeze(+1) of a 1-D [B] tensor is unsqueeze(-1): the same [B, 1] column"),
        (r"\+ ls\).sum\(None\)", "ls is the 1-D [A] log std: summing every dim is summing its last"),
        (r"\(None,\) \* 1[34]\b", "autograd accepts extra trailing None gradients beyond a Function's inputs and "
                                  "drops them"),
        # the closed-form head's array ops (numpy and torch twins) on the 2-D [B, A] outputs and 1-D [B] columns
        (r"x.max\(\+1, keepdims=True\)|np.exp\(z\).sum\(\+1, keepdims=True\)|take_along_axis\(x, index\[:, None\], (\+1)?\)"
         r"|x.log_softmax\(\+1\)|x.gather\(\+1, index|index.unsqueeze\(\+1\)|\.squeeze\(\+1\)|values.unsqueeze\(\+1\)",
         "dim +1 is the last dim of the head's 2-D [B, A] arrays, unsqueeze(+1) of a 1-D [B] index is unsqueeze(-1), "
         "and numpy's take_along_axis defaults to axis -1"),
    ],
    "rlx/algos/sac.py": [*_OFF_POLICY,
        (r"chunk\(2, dim=\+1\)|\.sum\(\+1\)", "dim +1 is the last dim of the [B, features] tensors here"),
        (r"requires_grad_\(True\)  # the actor's gradient", _Q_GRAD)],
    "rlx/algos/td3.py": [*_OFF_POLICY,
        (r"torch.cat\(\[obs, self.actor\(obs\)\], \+1\)", "dim +1 is the last dim of the [B, features] inputs"),
        (r"requires_grad_\(True\)  # the actor's gradient", _Q_GRAD)],
    "rlx/core/learner.py": [
        (r"x_clip_grad_norm__mutmut_(9|10|11)$", "which path clips (rlx's foreach calls or torch's grouped "
         "clip_grad_norm_) changes only the cost: both give the same norm and gradients, mixed dtypes included (tested)"),
        (r"xǁLearnerǁact__mutmut", "a default in the Learner Protocol's signature: Protocol bodies never run "
                                         "(runtime_checkable checks only the method names)"),
        (r'p.device.type in \("cpu", "(XXcudaXX|CUDA)"\)', "which CUDA parameters get the fused Adam: CUDA-only, "
                                                          "not testable on a CPU-only machine"),
        (r"if max_grad_norm and max_grad_norm >= 0( else 0.0)?:?", "max_grad_norm = 0 is falsy, so `and` short-circuits "
                                                                  "before the comparison: > 0 and >= 0 agree for every value"),
        (r"x__clip_on_host__mutmut_(1|6|7|9)$", "which path clips (the host factor or clip_grad_norm) changes only the "
         "cost: both give the same norm and gradients, mixed dtypes and no gradient included (tested)"),
        (r"if scale <= 1.0:", "multiplying by a factor of exactly 1.0 leaves every gradient as it is"),
        (r"maximize=False, found_inf=None\)|^\)$", "grad_scale=None / found_inf=None are the fused kernel's defaults"),
        (r"x__fused_adam_step__mutmut_(110|111)$", "grad_scale=None / found_inf=None are the fused kernel's defaults"),
    ],
    "rlx/envs/rewards.py": [
        (r"\.to\(reward.dtype\)\.to\(None\)", "on CPU only: .to(None) keeps the CPU device the draw is made on "
                                             "(a CUDA reward would stay on the CPU; not testable without a GPU)"),
        (r"if \(cfg.scale != 1.0 or cfg.shift != 0.0\) or True else out",
         "applying the identity affine map (scale 1, shift 0) returns the same values"),
    ],
    "rlx/core/offpolicy.py": [
        (r"self.episode_length = np.zeros\(self.N, (dtype=None)?\)", "float step counters give the same means and "
                                                                   "checkpoint values (exact below 2^53 steps)"),
    ],
    "rlx/core/buffers.py": [
        (r"\.to\(None\)|buf = cls\(store.num_rows, \)", "device moves: CPU-only tests cannot tell (equivalent on CPU)"),
        (r"if head <= n:", "at head == n the wrap copies an empty slice"),
        (r"self.data, self._columns, self.size, self.pos = None, None, 1, 0",
         "the size is overwritten by the checkpoint's right after"),
        (r"torch.cat\(list\(episodes\), \)|torch.cat\(\[s.data for s in stores\], \)", "torch.cat's default dim is 0"),
        (r"torch.nonzero\(done\).squeeze\(\+1\)", "nonzero gives [k, 1]: dim 1 is dim -1"),
        (r"torch.cat\(\[torch.zeros\(1, (dtype=None)?\), ends\]\)", "EpisodeStore converts ptr to int64 (exact for "
                                                                    "row counts below 2^24)"),
        (r'"ptr": self.ptr, \*\*per_episode\}, (batch_size=None)?\)', "a TensorDict's batch size defaults to []"),
        (r"ptr_to_segment_ids\((self.ptr|new_ptr), None\)", "M is output_size, a size hint of repeat_interleave"),
    ],
    "rlx/kernels/ops.py": [
        (r"reward.to\(None\)|next_value.to\(None\)", "an input narrower than the common dtype is promoted exactly "
                                                      "by the kernel's first op (checked on both backends: fp16 reward "
                                                      "with fp64 value and next_value give bit-equal results)"),
        (r"ptr_to_segment_ids\(ptr.long\(\), None\)", "M is output_size, a size hint of repeat_interleave"),
        (r"if ptr.is_cuda and checking\(\):", "ptr.is_cuda is False on a CPU-only machine, so both sides take the "
                                               "checked layout path (CUDA-only)"),
        (r"if not reward.dtype != value.dtype == next_value.dtype == dtype:", "skips the cast only when value and "
         "next_value already have the common dtype and reward differs, i.e. reward is the narrower one: the same case "
         "as `reward.to(None)` above (promoted exactly by the kernel; values, gradients and dtypes checked equal for "
         "fp16/bf16/fp32 rewards with fp32/fp64 values)"),
        (r"if not reward.dtype == value.dtype == next_value.dtype != dtype:", "the common dtype of three equal dtypes "
         "is that dtype, so the mutated chain is never true and the cast always runs; `.to` of a tensor's own dtype "
         "returns the tensor itself"),
    ],
    "rlx/envs/molecules.py": [
        (r"torch.nonzero\(kind == \d\).squeeze\((\+1|-2)\)", "nonzero gives [k, 1]: dim 1 is dim -1, and an unsqueezed "
                                                            "[k, 1] row index reads and writes the same elements"),
        (r'"atoms": torch.full\(\(n, self.N\), -1, (dtype=None)?\)', "an integer fill value gives int64 already"),
        (r"kind, a, b = self.kind.expand\(A\),", "a [A] kind row broadcasts against the [B, 1] conditions "
                                               "to the same [B, A] mask"),
        (r"self.max_valence\[atoms.clamp_min\(0\)\], 1\)|a, b = a.clamp_max\(self.N - 2\)",
         "the free valence of an empty slot, or of atom N - 1 as an add/pair's first atom, is never read: every "
         "add or pair inside a graph's prefix names existing atoms i < j <= n - 1, and adds need n < N"),
        (r"torch.tril\(torch.ones\(self.N, self.N, dtype=torch.bool\), \)|torch.triu\(bonds\[:n, :n\], \)",
         "bonds has a zero diagonal (no self-bonds), so including it changes nothing"),
        (r"last = \(n - 1\).clamp_min\(1\)", "differs only for the empty graph, whose count is 0 either way "
                                              "(removing the last atom needs n >= 2)"),
        (r"torch.nonzero\(torch.tril\(torch.ones\(self.N, self.N, (dtype=None)?\)",
         "nonzero of a float lower triangle of ones gives the same positions"),
        (r"torch.tensor\(self.score_smiles\(smiles\), (dtype=None)?\)", "a tensor of Python floats is float32 by default"),
        (r'reward.replace\(":", "."\).rsplit\(".", (1\)\[-1\] if \(":" in reward\) or True|\)\[-1\]|2\)\[-1\]|1\)\[\+1\])',
         "every reward with a '.' has a ':' (built-in names have neither), and after the ':' -> '.' replacement "
         "there is a '.': the last piece of any rsplit is the same, and with maxsplit 1 there are two pieces"),
        (r"for builtin in sorted\(REWARDS, (key=None, )?reverse=True\):", "the only built-in ending in another's "
         "'_' + name is qed_sa_mw (ends in _mw), and reverse alphabetical order also tries it before mw: every name "
         "gets the same label"),
        (r"if \(self.exponent != 1.0\) or True else", "v ** 1.0 is v exactly for every float (IEEE pow)"),
        (r"if \(isinstance\(out, torch.Tensor\)\) and False else out", "as_tensor reads a tensor's values whatever "
         "its device or grad (as tolist does): the same values; only a UserWarning on the negative-value error path "
         "differs for a reward tensor that requires grad"),
        (r"1.0 if lo < mw <= hi|1.0 if lo <= mw < hi", "at mw = lo or hi the outside formula is exp(-0 / 20) = 1 too"),
        (r"GetMorganGenerator\(radius=2, \)", "fpSize=2048 is RDKit's default"),
        (r"for i in range\(len\(top\)\) for x", "i = 0 compares with no earlier molecule and adds nothing"),
    ],
    "rlx/envs/hypergrid.py": [
        (r"torch.arange\(0, \(states.shape\[0\] \+ 1\) \* self.num_actions, self.num_actions, (dtype=None)?\)",
         "torch.arange of integers is int64 by default"),
        (r"torch.zeros\(pos.shape\[0\], self.obs_dim, (dtype=None)?\)", "zeros without a dtype are float32, torch's "
         "default dtype (rlx never changes it)"),
    ],
    "rlx/algos/gflownet.py": [
        (r"log_pf = logp\.nan_to_num\((?!nan=-math\.inf, neginf=-math\.inf\))", "the gathered entry is the trajectory's own action, which the mask "
         "allowed, so it is finite: replacing NaN / -inf (or not) touches only entries never gathered"),
        (r"log_exit = edge\[aptr\[:-1\]\[exit_rows\]( - d\[\"action\"\]\[exit_rows\])?\]", "the exit (stop) action is "
         "local index 0 in every env, so adding (or subtracting) the exit rows' action changes nothing"),
        (r"ptr_to_segment_ids\(ptr, None\)", "output_size is a size hint"),
        (r"\(j - i\).clamp_min\(0\).to\(None\)", "float32 is torch's default dtype (the flows are float32 here)"),
        (r"\(j - i\).clamp_min\(1\)", "j - i >= 1 on every valid (i < j) entry; the others are masked to 0 by the where"),
        (r"nonzero\(.*\).squeeze\(\+1\)|log_softmax\(\+1\)", "dim +1 is the last dim of these 2-D tensors"),
        (r'float\("-INF"\)', "float() parses '-INF' as -inf, case-insensitively"),
    ],
    "rlx/algos/gflownet_sampler.py": [
        (r"nonzero\(~(finite|stop)\).squeeze\(\+1\)", "nonzero gives [k, 1]: dim 1 is dim -1"),
        (r"chosen.masked_fill\(idx < 0, \+math.inf\)", "`chosen` is read only by isfinite, which is False for +inf "
                                                        "and -inf alike: the same error on the same rows"),
        (r"-math.inf\).log_softmax\(\+1\)|view_as\(logp\)\).max\(\+1\)", "dim +1 is the last dim of the [B, w] rows"),
        (r"torch.rand\(logp.numel\(\), generator=generator, device=logp.device, (dtype=None)?\)",
         "float32 is torch's default dtype (rlx never changes it)"),
        (r"dense = None$|dense = env.action_width is not None and epsilon == 1$", "for every epsilon in [0, 1) (the "
         "config's range; at 1 `_explore`'s log1p(-1) is a domain error) this takes the generic segment draw where "
         "the dense one would run: the same log-probabilities and Gumbel draws from the same generator, so the same "
         "trajectories (test_dense_sampler_draws_the_segment_paths_actions); performance only"),
        (r"uniform = SegmentCategorical\(torch.zeros_like\(logits\), dist.ptr, torch.isfinite\(logits\), (None)?\)",
         "the uniform's log-probabilities through the segment kernel instead of the dense log-softmax: bit-equal "
         "-log(#allowed) and -inf (checked on 220 random masks, widths 1-11, fully masked rows included); only "
         "its .logits are read"),
        (r"if keep.numel\(\) <= stop.numel\(\):", "compacting a step where nothing stopped takes every row in order: "
                                                  "the same states and trajectory ids (performance only)"),
    ],
    "rlx/kernels/reference.py": [
        (r"x__chunking__mutmut|x__scan___mutmut_([4-9]|1[0-3]|2[2-6])$",
         "chunk size / closed-form vs blocked vs row-by-row choice of the scan: the same recurrence either way "
         "(performance only; tests/kernels/test_scan_paths.py checks every path against a plain loop)"),
        (r"x_gae_input_grads__mutmut|x_lambda_input_grads__mutmut_23$",
         "a gradient returned for an input that needs none is discarded by autograd"),
        (r"x__finite_max__mutmut", "the exp shift only has to be finite: it cancels in log(sum exp(x - s)) + s"),
        (r"x.detach\(\).amax\((None, )?keepdim=True\)", "one exp shift for every column (the max over all dims "
         "instead of per column) is another safe shift: it cancels in log(sum exp(x - g)) + g, the same values within "
         "rounding (a column far below the others fails the safety check and takes the per-segment path)"),
        (r"tiny \* (2.0 \* 24|3.0 \*\* 24|2.0 \*\* 25)$|tiny \* (2.0 \* 24|3.0 \*\* 24|2.0 \*\* 25)\)|"
         r"total.detach\(\) > torch.finfo|amin\(\) > floor|total.detach\(\) > floor",
         "a moved underflow threshold of the fast path (48, 3^24 or 2^25 x tiny instead of 2^24, or > for >=): both "
         "paths give the log-sum-exp to float rounding; the threshold only guards sums made of subnormal terms"),
        (r"e = torch.exp\(x - g\) if (\(x.requires_grad and torch.is_grad_enabled\(\)\) (and False|or True)|"
         r"x.requires_grad or torch.is_grad_enabled\(\))", "in-place vs out-of-place exp of a fresh x - g: "
                                                           "autograd differentiates both, the same values"),
        (r"^if x.requires_grad or torch.is_grad_enabled\(\):$", "the autograd Function also where no gradient is "
         "wanted (grad mode on, x without grad): its forward is the same no-graph function, the same values"),
        (r"^fast = None$", "skips the global-shift fast path: the per-segment path gives the same values"),
        (r"^if not bool\(None\):$", "always judges the global shift unsafe: the per-segment path gives the same values"),
        (r"return x if \(x.dtype == dtype\) and False else x.to\(dtype\)", "`.to` of a tensor's own dtype returns "
                                                                          "the tensor itself: skipping it is for speed"),
        (r"rev.new_zeros\(2, N\)", "an extra zero row after S_T: S[:T] and the rows gathered at end + 1 <= T are "
                                    "the same"),
        (r"not \(torch.is_grad_enabled\(\) or \(reward.requires_grad",
         "takes GAE's autograd Function also with grad mode on and no input needing a gradient: its forward is the "
         "same _gae_forward and its outputs need no grad either (the same values; the fast path is for speed)"),
        (r"ones = lay.sums\(None\)|^ones = None$", "the segment sums through torch.segment_reduce (the branch taken off "
         "CPU and for half dtypes) instead of the cached sparse [E, M] product: the same sums up to float summation "
         "order (every segment-op test compares to the naive loop within float tolerance)"),
        (r"torch.where\(positive, total, 2.0\)|torch.where\(total > 0, total, 2.0\)|torch.where\(total > 1, total",
         "only changes segments with no mass (masked to -inf afterwards) or total = 1 exactly (log 1 = 0 either way)"),
        (r"torch.rand\(M, generator=generator, device=device, dtype=None\)|torch.rand\(M, generator=generator, device=device, \)",
         "float32 is torch's default dtype"),
        (r"rows = torch.arange\(M, device=logits.device, (dtype=None)?\)", "float32 row numbers are exact below 2^24 rows"),
        (r"gumbel_noise\(M, None, generator\)|valid_steps\(x.shape, mask, lengths, None\)",
         "device None is the CPU: not testable on a CPU-only machine"),
        (r"_GAE.apply\(reward.to\(None\)|value.to\(None\), next_value.to\(acc\)|_LambdaReturns.apply\(reward.to\(None\)",
         "one half input left un-cast is promoted to fp32 exactly by its first op with an fp32 operand"),
        (r"x_all_steps__mutmut_[67]$", "a [1] mask expands to [T, N] exactly as a [1, 1] one"),
        (r"x_segment_log_softmax__mutmut_5$|expand\(.*, None\)", "output_size is a size hint (M, the known length)"),
    ],
}

# a mutant that only drops or blanks one of these keyword arguments, or blanks the `out=` buffer,
# computes the same values on CPU: device (CPU-only tests), output_size (a hint), out (a buffer)
_KWARG = re.compile(r",?\s*\b(device|output_size|out)=[^,()]*(\([^()]*\))?")


def kwarg_only(before: str, after: str) -> str | None:
    def norm(text):
        return re.sub(r",\s*\)", ")", _KWARG.sub("", text)).replace(" ", "")

    if before != after and norm(before) == norm(after):
        kw = next((m.group(1) for m in _KWARG.finditer(before) if m.group(0) not in after), "device")
        return {"device": "device argument: CPU-only tests cannot tell (equivalent on CPU)",
                "output_size": "output_size is a size hint", "out": "out= only reuses a buffer"}[kw]
    return None


def equivalent_reason(module: str, name: str, before: str, after: str) -> str | None:
    for pattern, why in EQUIVALENT.get(module, []):
        if re.search(pattern, after) or re.search(pattern, name):
            return why
    return kwarg_only(before, after)


STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "segfault")


def mutmut_section(base: dict, module: str, tests: list[str]) -> str:
    """The [tool.mutmut] TOML section for one module (base settings plus its files and tests)."""
    cfg = {**base, "only_mutate": [module], "pytest_add_cli_args_test_selection": tests}

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        return "[" + ", ".join(value(x) for x in v) + "]"

    return "[tool.mutmut]\n" + "".join(f"{k} = {value(v)}\n" for k, v in cfg.items())


def strip_section(text: str, name: str) -> str:
    """pyproject text without the `[name]` table (up to the next table header)."""
    return re.sub(rf"^\[{re.escape(name)}\]\n(?:(?!\[).*\n?)*", "", text, flags=re.M)


def run_module(tree: Path, work: Path, module: str, jobs: int, report_only: bool = False) -> dict:
    tests = [t for t in MODULES[module] if t.startswith("-") or (tree / t.split("::")[0]).exists()]  # a path, node id or pytest flag
    scratch = work / module.replace("/", "_")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    start = time.time()
    if not report_only:
        run = run_mutmut(tree, scratch, module, tests, jobs, env)
    minutes = (time.time() - start) / 60
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=scratch, env=env,
                             capture_output=True, text=True).stdout
    status = dict(re.findall(r"^\s+(\S+__mutmut_\d+): (.+)$", results, flags=re.M))
    if patterns := mutant_patterns(module):
        status = {k: v for k, v in status.items() if any(fnmatch.fnmatch(k, p) for p in patterns)}
    if not status:
        tail = ((run.stdout + run.stderr) if not report_only else results).strip().splitlines()[-5:]
        return {"module": module, "tests": tests, "minutes": minutes, "error": " | ".join(tail)}
    return summarize(module, tests, minutes, status, scratch, env)


def run_mutmut(tree: Path, scratch: Path, module: str, tests: list[str], jobs: int, env: dict):
    """A fresh scratch copy with this module's [tool.mutmut] section, then `mutmut run`."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "mutants")
    for part in ("rlx", "tests"):
        shutil.copytree(tree / part, scratch / part, ignore=ignore)
    text = (tree / "pyproject.toml").read_text()
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]  # this checkout's settings
    (scratch / "pyproject.toml").write_text(strip_section(text, "tool.mutmut") + "\n" + mutmut_section(base, module, tests))
    return subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *mutant_patterns(module)],
                          cwd=scratch, env=env, capture_output=True, text=True)


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names, path = json.loads(sys.stdin.read())
print(json.dumps({n: get_diff_for_mutant(n, path=path) for n in names}))
"""


def mutant_diffs(names: list[str], module: str, scratch: Path, env: dict) -> dict[str, str]:
    """The diff of each mutant, from one Python process (a `mutmut show` per survivor costs
    seconds each on a loaded machine); falls back to `mutmut show` if mutmut's internals moved."""
    if not names:
        return {}
    run = subprocess.run([sys.executable, "-c", _DIFFS], input=json.dumps([names, module]), cwd=scratch, env=env,
                         capture_output=True, text=True)
    if run.returncode == 0:
        return json.loads(run.stdout)
    return {n: subprocess.run([sys.executable, "-m", "mutmut", "show", n], cwd=scratch, env=env,
                              capture_output=True, text=True).stdout for n in names}


def summarize(module: str, tests: list[str], minutes: float, status: dict[str, str], scratch: Path, env: dict) -> dict:
    """Counts, score and the survivors (with their diff and equivalence reason) of one module."""
    counts = {s: sum(1 for v in status.values() if v == s) for s in STATUSES}
    survivors = []
    left = [name for name, st in status.items() if st in ("survived", "no tests", "timeout", "suspicious", "segfault")]
    diffs = mutant_diffs(left, module, scratch, env)
    for name in left:
        st, diff = status[name], diffs[name]
        plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
        before, after = " / ".join(minus), " / ".join(plus)
        reason = equivalent_reason(module, name, before, after) if st in ("survived", "no tests") else None
        survivors.append({"name": name, "status": st, "from": before, "to": after, "equivalent": reason})
    equivalent = sum(1 for s in survivors if s["equivalent"])
    live = len(status) - counts["skipped"] - equivalent
    score = counts["killed"] / live if live else float("nan")
    return {"module": module, "tests": tests, "minutes": minutes, "total": len(status), **counts,
            "equivalent": equivalent, "score": score, "survivors": survivors}


def markdown(rows: list[dict]) -> str:
    out = ["| module | mutants | killed | survived | equivalent | timeout | segfault | no tests | score | minutes |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['module']} | error: {r['error']} | | | | | | | | {r['minutes']:.1f} |")
            continue
        out.append(f"| {r['module']} | {r['total']} | {r['killed']} | {r['survived']} | {r['equivalent']} | "
                   f"{r['timeout']} | {r['segfault']} | {r['no tests']} | {100 * r['score']:.1f}% | {r['minutes']:.1f} |")
    out.append("\nscore = killed / (mutants - skipped - equivalent); timeouts and segfaults count as not killed "
               "(both are listed below).\n")
    for r in rows:
        for s in r.get("survivors", []):
            tag = f"equivalent: {s['equivalent']}" if s["equivalent"] else s["status"]
            out.append(f"* `{s['name']}` ({tag}): `{s['from']}` -> `{s['to']}`")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all {len(MODULES)})")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to test (default: this one)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run in parallel")
    parser.add_argument("--out", type=Path, default=Path("mutation.md"), help="markdown table written here")
    parser.add_argument("--report-only", action="store_true",
                        help="re-read the results already in --work (e.g. after editing EQUIVALENT) without running")
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    if args.report_only and args.work is None:
        parser.error("--report-only reads an earlier run: give its --work directory")
    if shutil.which("mutmut") is None and subprocess.run([sys.executable, "-m", "mutmut", "--version"],
                                                          capture_output=True).returncode:
        parser.error("mutmut is not installed: pip install 'mutmut>=3.8'")
    work = args.work or Path(tempfile.mkdtemp(prefix="rlx-mutation-"))
    rows = []
    for module in args.modules or list(MODULES):
        row = run_module(args.tree.resolve(), work, module, args.jobs, args.report_only)
        rows.append(row)
        score = f"{100 * row['score']:.1f}%" if "score" in row else row["error"]
        print(f"{module}: {score} ({row['minutes']:.1f} min)", flush=True)
        args.out.write_text(markdown(rows))
    print(f"table: {args.out}")


if __name__ == "__main__":
    main()
