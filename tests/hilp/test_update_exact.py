"""HILP details the update-rule tests leave open, by hand: the unit-sphere draw from the given
generator, the regression without intercept and the unit norm of a small fit, the planning cache
after a phi step, the phi running mean (state features only, per coordinate), and the skill
batch's shape and termination dtype."""

import torch

from rlx.algos.hilp import PHI_MEAN_RATE, infer_latent, unit_sphere
from tests.hilp.test_update_rules import batch, make


def test_unit_sphere_draws_from_the_given_generator():
    torch.manual_seed(0)
    a = unit_sphere(3, 4, torch.Generator().manual_seed(7))
    torch.manual_seed(1)  # the global RNG plays no part
    b = unit_sphere(3, 4, torch.Generator().manual_seed(7))
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, z / z.norm(dim=-1, keepdim=True))
    assert torch.equal(a, b)


def test_regression_without_intercept_and_a_small_fit_is_still_a_unit_vector():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    r = torch.tensor([3.0, 1.0, 4.0, 7.0])  # r = 3 f_0 + f_1 exactly, mean 3.75
    torch.testing.assert_close(infer_latent(f, r, intercept=False), torch.tensor([3.0, 1.0]) / 10 ** 0.5)
    # with the intercept the centred fit: r - 3.75 against f - mean f, the same exact w here
    torch.testing.assert_close(infer_latent(f, r), torch.tensor([3.0, 1.0]) / 10 ** 0.5)
    # r = 3 + 2 f_0 - f_1 without intercept: the plain least squares of r on f
    r2 = 3 + 2 * f[:, 0] - f[:, 1]
    w = torch.linalg.lstsq(f.double(), r2.double()[:, None]).solution[:, 0]
    torch.testing.assert_close(infer_latent(f, r2, intercept=False), (w / w.norm()).float())
    tiny = infer_latent(f, 1e-3 * r)  # |w| = 1e-3 sqrt(10): normalized all the same
    torch.testing.assert_close(tiny, torch.tensor([3.0, 1.0]) / 10 ** 0.5)


def test_planning_reads_the_candidates_phi_after_a_phi_step():
    learner = make(plan_recursions=1, plan_knns=3)
    obs, goal = torch.randn(5, 3), torch.randn(5, 3)
    learner.subgoal(obs, goal)  # fills the candidates' phi cache
    learner.update(batch())  # phi moves

    def by_hand():
        phi_s, phi_g, phi_c = learner.embed(obs), learner.embed(goal), learner.embed(learner.candidates)
        minimax = torch.maximum(torch.cdist(phi_s, phi_c), torch.cdist(phi_g, phi_c))
        return phi_c[minimax.topk(3, dim=1, largest=False).indices].mean(1)

    with torch.no_grad():
        torch.testing.assert_close(learner.subgoal(obs, goal), by_hand())


def test_phi_mean_follows_phi_per_coordinate_for_state_features_only():
    learner = make(feature="state")
    b = batch()
    old = learner.phi.phi_mean.clone()
    learner.update(b)
    with torch.no_grad():
        expected = old + PHI_MEAN_RATE * (learner.embed(b["obs"]).mean(0) - old)  # phi after its step
    torch.testing.assert_close(learner.phi.phi_mean, expected)
    assert learner.phi.phi_mean.unique().numel() == learner.phi.phi_mean.numel()  # one mean per coordinate
    diff = make(feature="diff")
    before = diff.phi.phi_mean.clone()
    diff.update(b)
    assert torch.equal(diff.phi.phi_mean, before)  # diff features never read it: left as the dataset set it


def test_skill_batch_is_a_batch_of_rows_with_boolean_terminations():
    learner = make()
    seen = []
    real = learner.policy.update
    learner.policy.update = lambda skill: (seen.append(skill), real(skill))[1]
    learner.update(batch(n=12))
    (skill,) = seen
    assert skill.batch_size == torch.Size([12])
    assert skill["terminated"].dtype == torch.bool and not skill["terminated"].any()
