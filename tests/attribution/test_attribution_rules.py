"""Attribution rules the selection tests leave open, by hand: Ward on vector centroids and on the
merged centroid's position, W1 of unnormalized weights, the continuous rule's gap and defaults,
and the hierarchy's bookkeeping of local index 0 and of group 0."""

import pytest
import torch

from rlx.algos.attribution import attribute, attribute_hierarchy, wasserstein_1d, ward_hierarchy


def test_ward_compares_centroid_vectors_not_their_coordinate_means():
    # A = (0, 2), B = (2, 0), C = (1, 1.5): A + C costs 1/2 (1 + 0.25), B + C 1/2 (1 + 2.25), A + B 1/2 8.
    # Coordinate means (1, 1, 1.25) would make A and B identical.
    x = torch.tensor([[0.0, 2.0], [2.0, 0.0], [1.0, 1.5]])
    groups, levels = ward_hierarchy(x, torch.tensor([0, 1, 2]))
    assert groups == [(0,), (1,), (2,), (0, 2)] and levels == [[0, 1, 2], [1, 3]]


def test_ward_places_the_merged_centroid_at_the_weighted_mean():
    # -6, 0, 1, 9: 0 + 1 first (cost 1/2); their centroid 0.5 is nearer -6 (2/3 6.5^2) than 9 (2/3 8.5^2)
    x = torch.tensor([[-6.0], [0.0], [1.0], [9.0]])
    groups, levels = ward_hierarchy(x, torch.tensor([0, 1, 2, 3]))
    assert groups[4:] == [(1, 2), (0, 1, 2)] and levels[-1] == [3, 5]


def test_w1_normalizes_both_weight_vectors():
    assert wasserstein_1d(torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])) == pytest.approx(2.0)
    assert wasserstein_1d(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])) == pytest.approx(2.0)
    assert wasserstein_1d(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 4.0])) == pytest.approx(0.5)


def test_continuous_rule_ranks_the_change_from_the_original_action_with_its_defaults():
    orig = torch.tensor([[1.0], [0.0]])  # [Q = 2, A = 1]
    # cluster 0 keeps query 0's action and moves query 1 by 0.5; cluster 1 moves query 0 by 1 and query 1 by 2
    alt = torch.tensor([[[1.0], [0.5]], [[0.0], [2.0]]])
    dist = torch.tensor([0.1, 0.2])
    # defaults top_k = 1, tol = 0: only the largest change counts, however small
    assert attribute(orig, alt, dist, discrete=False).tolist() == [1, 1]
    assert attribute(orig, alt, dist, discrete=False, top_k=2).tolist() == [1, 0]  # the nearer of two changes
    assert attribute(orig, alt, dist, discrete=False, top_k=2, tol=0.6).tolist() == [1, 1]
    assert attribute(orig, alt * 0 + orig[None], dist, discrete=False).tolist() == [-1, -1]


def test_continuous_hierarchy_passes_top_k_and_tol_to_every_level():
    orig = torch.tensor([[1.0], [0.0]])
    alt = torch.tensor([[[1.0], [0.5]], [[0.0], [2.0]], [[1.0], [0.0]]])  # groups 0, 1, 2 (2 = the merge)
    dist = torch.tensor([0.1, 0.2, 0.3])
    levels = [[0, 1], [2]]
    assert [t.tolist() for t in attribute_hierarchy(orig, alt, dist, levels, discrete=False)] == [[1, 1], [0, 0]]
    got = attribute_hierarchy(orig, alt, dist, levels, discrete=False, top_k=2)
    assert [t.tolist() for t in got] == [[1, 0], [0, 0]]
    got = attribute_hierarchy(orig, alt, dist, levels, discrete=False, top_k=2, tol=0.6)
    assert [t.tolist() for t in got] == [[1, 1], [0, 0]]
    got = attribute_hierarchy(orig, alt, dist, levels, discrete=False, top_k=2, tol=1.5)  # query 0 moved by 1 only
    assert [t.tolist() for t in got] == [[-1, 1], [-1, 0]]


def test_hierarchy_keeps_an_answer_of_group_0_and_maps_local_index_0():
    orig = torch.tensor([0, 0])
    # level 0 = groups [0, 1]: group 0 changes query 0 only; level 1 = groups [3, 2]: both change both queries
    alt = torch.tensor([[1, 0], [0, 0], [1, 1], [1, 1]])
    dist = torch.tensor([0.5, 0.1, 0.2, 0.05])
    group, level = attribute_hierarchy(orig, alt, dist, [[0, 1], [3, 2]], discrete=True)
    # query 0 keeps group 0 from level 0 (not level 1's group 3); query 1 gets local index 0 of level 1, group 3
    assert group.tolist() == [0, 3] and level.tolist() == [0, 1]
    group, level = attribute_hierarchy(orig, alt, dist, [[2, 0]], discrete=True)  # local index 0 is group 2
    assert group.tolist() == [2, 2] and level.tolist() == [0, 0]


def test_w1_normalizes_the_second_vector_even_with_its_mass_first():
    # q's mass on the first point: its cumulative sum reaches the kept [:-1] entries (2 q would give 8, not 2)
    assert wasserstein_1d(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([2.0, 0.0, 0.0])) == pytest.approx(2.0)
    assert wasserstein_1d(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0])) == pytest.approx(0.5)
