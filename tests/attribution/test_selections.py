"""Attribution's selections on hand-made clusters whose answer is known: the BIC of a k-means
solution term by term, cluster purity, the complement of clusters and merged groups, the
attribution rule's tolerance and top-k edges, Ward merges with weighted centroids, and the
initial-state value each kind of explanation policy reports."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlx.algos.attribution import (attribute, attribute_hierarchy, cluster_bic, cluster_purity, complement,
                                   initial_state_value, majority_family, ward_hierarchy)
from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic
from rlx.envs.gridworld import make_gridworld_dataset


def test_bic_term_by_term():
    # two 1-D clusters of two points: n = 4, d = 1, k = 2, SSE = 4 * 0.25 = 1, s2 = SSE / ((n - k) d) = 0.5
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    labels, centers = np.array([0, 0, 1, 1]), np.array([[0.5], [10.5]])
    loglik = 2 * 2 * math.log(2 / 4) - 4 * 1 / 2 * math.log(2 * math.pi * 0.5) - (4 - 2) * 1 / 2
    params = (2 - 1) + 2 * 1 + 1
    assert cluster_bic(x, labels, centers) == pytest.approx(loglik - params / 2 * math.log(4))
    # 2-D points: d multiplies the variance terms and the parameter count
    x2 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 9.0], [0.0, 11.0], [1.0, 10.0]])
    labels2, centers2 = np.array([0, 0, 1, 1, 1]), np.array([[1.0, 0.0], [1 / 3, 10.0]])
    sse = float(((x2.double().numpy() - centers2[labels2]) ** 2).sum())
    s2 = sse / ((5 - 2) * 2)
    loglik2 = 2 * math.log(2 / 5) + 3 * math.log(3 / 5) - 5 * 2 / 2 * math.log(2 * math.pi * s2) - (5 - 2) * 2 / 2
    assert cluster_bic(x2, labels2, centers2) == pytest.approx(loglik2 - ((2 - 1) + 2 * 2 + 1) / 2 * math.log(5))


def test_bic_edge_cases_empty_cluster_zero_spread_and_as_many_clusters_as_points():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    # an empty third cluster adds no n_c log(n_c / N) term but still counts its parameters
    with_empty = cluster_bic(x, np.array([0, 0, 1, 1]), np.array([[0.5], [10.5], [99.0]]))
    s2 = 1.0 / ((4 - 3) * 1)
    loglik = 4 * math.log(2 / 4) - 4 / 2 * math.log(2 * math.pi * s2) - (4 - 3) / 2
    assert with_empty == pytest.approx(loglik - ((3 - 1) + 3 + 1) / 2 * math.log(4))
    exact = torch.tensor([[0.0], [0.0], [1.0], [1.0]])  # every point on its centre: s2 is floored at 1e-12
    loglik = 4 * math.log(0.5) - 2 * math.log(2 * math.pi * 1e-12) - 1.0
    assert cluster_bic(exact, np.array([0, 0, 1, 1]), np.array([[0.0], [1.0]])) == pytest.approx(loglik - 2 * math.log(4))
    two = torch.tensor([[0.0], [3.0]])  # k = n: the variance denominator is clamped to 1 degree of freedom
    loglik = 2 * math.log(0.5) - 1 * math.log(2 * math.pi * 1e-12) - 0.0
    assert cluster_bic(two, np.array([0, 1]), np.array([[0.0], [3.0]])) == pytest.approx(loglik - 4 / 2 * math.log(2))
    # more centres than points (two empty): n - k = -1 is clamped in the variance but not in the last term
    pair = torch.tensor([[0.0], [2.0]])
    loglik = 0.0 - 2 / 2 * math.log(2 * math.pi * 2.0) - (2 - 3) / 2  # SSE 2 over 1 degree of freedom
    assert cluster_bic(pair, np.array([0, 0]), np.array([[1.0], [5.0], [9.0]])) == pytest.approx(loglik - 6 / 2 * math.log(2))


def test_cluster_purity_and_majority_family_hand_made():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    families = torch.tensor([0, 0, 1, 1, 1, 2])
    assert cluster_purity(labels, families) == pytest.approx((2 + 2 + 1) / 6)
    assert cluster_purity(labels, labels) == 1.0
    assert majority_family(torch.tensor([2, 2, 0]), 3) == 2 and majority_family(torch.tensor([1]), 3) == 1
    assert majority_family(torch.tensor([0, 1, 2]), 3) == -1


def test_complement_accepts_numpy_labels_and_groups_of_any_order():
    store = make_gridworld_dataset((2, 2, 2), seed=0).episodes
    labels = np.array([2, 0, 1, 2, 0, 1])
    rest = complement(store, labels, (2, 0))  # a merged group given out of order
    assert rest.num_episodes == 2
    for new, old in enumerate([2, 5]):
        assert (rest.episode(new) == store.episode(old)).all()
    assert complement(store, torch.as_tensor(labels), 1).num_episodes == 4
    assert complement(store, labels, 7).num_episodes == 6  # an unused id removes nothing


def test_attribution_tolerance_is_strict_and_top_k_counts_from_the_largest_change():
    orig = torch.zeros(2, 1)
    alt = torch.tensor([[[0.5], [0.0]],
                        [[0.25], [0.3]],
                        [[0.125], [0.3001]]])
    dist = torch.tensor([0.9, 0.1, 0.5])
    # query 0: only cluster 0 moves by more than tol = 0.25 (cluster 1 moves exactly 0.25)
    assert attribute(orig, alt, dist, False, top_k=3, tol=0.25).tolist() == [0, 1]
    # top_k = 1 keeps only the largest change: cluster 0 for query 0, cluster 2 for query 1
    assert attribute(orig, alt, dist, False, top_k=1, tol=0.0).tolist() == [0, 2]
    # top_k = 2: the two largest changes compete on distance
    assert attribute(orig, alt, dist, False, top_k=2, tol=0.0).tolist() == [1, 1]
    # discrete: any changed action counts, the nearest data distance wins; no change: -1
    d_alt = torch.tensor([[1, 0, 0], [1, 2, 0], [0, 2, 0]])
    assert attribute(torch.tensor([0, 0, 0]), d_alt, torch.tensor([0.3, 0.2, 0.1]), True).tolist() == [1, 2, -1]


def test_hierarchy_stops_at_the_first_level_that_explains_each_query_and_maps_group_ids():
    # clusters 0..3; group 4 = {0, 1}, group 5 = {2, 3}; levels [0, 1, 2, 3], [2, 3, 4], [4, 5]
    orig = torch.tensor([0, 0, 0])
    alt = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1],
                        [1, 0, 0],   # group 4 explains query 0 at level 1
                        [0, 1, 1]])  # group 5 explains query 1 at level 2 (and query 2, already explained)
    dist = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.01])
    group, level = attribute_hierarchy(orig, alt, dist, [[0, 1, 2, 3], [2, 3, 4], [4, 5]], discrete=True)
    assert group.tolist() == [4, 5, 3] and level.tolist() == [1, 2, 0]


def test_ward_merges_use_size_weighted_centroids():
    # five 1-D clusters: A = 1 x {0}, B = 3 x {4}, C = 1 x {8.5}, D = 1 x {12}, E = 1 x {21.5}.
    # SSE increases n_a n_b / (n_a + n_b) d^2: C+D 6.1 first, then A+B 12 (centroid (0 + 3 * 4) / 4 = 3),
    # then AB+CD 4*2/6 * (10.25 - 3)^2 = 70.1 < CD+E 2/3 * 11.25^2 = 84.4. With the unweighted mean 2
    # of A and B, AB+CD would cost 4*2/6 * 8.25^2 = 90.8 and CD+E would merge instead.
    x = torch.tensor([[0.0]] + [[4.0]] * 3 + [[8.5], [12.0], [21.5]])
    labels = torch.tensor([0, 1, 1, 1, 2, 3, 4])
    groups, levels = ward_hierarchy(x, labels)
    assert groups[5:] == [(2, 3), (0, 1), (0, 1, 2, 3)]
    assert levels == [[0, 1, 2, 3, 4], [0, 1, 4, 5], [4, 5, 6], [4, 7]]


def test_initial_state_value_of_each_kind_of_explanation_policy():
    obs = torch.tensor([[0.0, 1.0], [2.0, -1.0]])

    class Tabular:
        def value(self, o):
            return o.sum(1)  # 1 and 1

    assert initial_state_value(Tabular(), obs) == pytest.approx(1.0)
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    torch.manual_seed(0)
    ac = OfflineActorCritic(IQLConfig(hidden=[8]), box, gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
    ac.set_dataset_stats(torch.randn(50, 2))
    a = ac.to_unit(ac.act(obs, deterministic=True)["action"])
    expected = float(ac.q(ac.norm_obs(obs), a).mean(0).mean().detach())
    assert initial_state_value(ac, obs) == pytest.approx(expected, rel=1e-6)
    bc = OfflineActorCritic(IQLConfig(hidden=[8], value="none", extraction="bc"), box, gym.spaces.Box(-2.0, 2.0, (1,)))
    assert math.isnan(initial_state_value(bc, obs))
