"""Pareto filter, hypervolume and MIP against values worked out by hand."""

import numpy as np
import pytest

from rlphf_cli.evaluation.pareto_metrics import (
    MOD_SIMPLEX_3,
    bootstrap_fronts,
    hypervolume,
    mip,
    pareto_mask,
    simplex_lattice,
)


def test_pareto_filter_drops_dominated_points_and_keeps_duplicates():
    pts = [(1, 3), (2, 2), (3, 1), (1, 1), (2, 2), (0.5, 3), (3, 1)]
    # (1, 1) is dominated by (2, 2); (0.5, 3) by (1, 3); the duplicated (2, 2) and (3, 1) stay, both copies
    assert pareto_mask(pts).tolist() == [True, True, True, False, True, False, True]
    assert pareto_mask([(1, 1, 1), (1, 1, 2), (2, 0, 0)]).tolist() == [False, True, True]


def test_hypervolume_2d_by_hand():
    # staircase: (1,3) (2,2) (3,1) above (0,0): 3*1 + 2*1 + 1*1 = 6
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (0, 0)) == pytest.approx(6.0)
    # a dominated point, a duplicate and a point worse than the reference change nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (1, 1), (2, 2), (-1, 5)], (0, 0)) == pytest.approx(6.0)
    # another reference: (1,3),(2,2),(3,1) above (0.5, 0.5): 0.5*2.5 + 1*1.5 + 1*0.5 ... by rectangles:
    # x in [0.5,1]: height 2.5; [1,2]: 1.5; [2,3]: 0.5 -> 1.25 + 1.5 + 0.5 = 3.25
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (0.5, 0.5)) == pytest.approx(3.25)
    # a point on the reference's edge (y == ref) adds nothing; nothing at all gives 0
    assert hypervolume([(5, 0), (1, 1)], (0, 0)) == pytest.approx(1.0)
    assert hypervolume([], (0, 0)) == 0.0
    assert hypervolume([(-1, -1)], (0, 0)) == 0.0
    # negative scores against a negative reference (reward-model logits)
    assert hypervolume([(-1, -2), (-2, -1)], (-3, -3)) == pytest.approx(2 * 1 + 1 * 1 + 0)


def test_hypervolume_3d_by_hand():
    assert hypervolume([(1, 1, 1)], (0, 0, 0)) == pytest.approx(1.0)
    # two boxes 2x1x1 and 1x2x1 overlap in a 1x1x1 cube: 2 + 2 - 1 = 3
    assert hypervolume([(2, 1, 1), (1, 2, 1)], (0, 0, 0)) == pytest.approx(3.0)
    # a box 1x1x2 joins: union = 3 + 2 - overlap with the first two (1x1x1) = 4
    assert hypervolume([(2, 1, 1), (1, 2, 1), (1, 1, 2)], (0, 0, 0)) == pytest.approx(4.0)
    # dominated, duplicate and below-reference points change nothing
    pts = [(2, 1, 1), (1, 2, 1), (1, 1, 2), (1, 1, 1), (2, 1, 1), (3, 3, -1)]
    assert hypervolume(pts, (0, 0, 0)) == pytest.approx(4.0)
    # against (0.5, 0.5, 0.5): each box shrinks by 0.5 per side: 1.5*.5*.5*3 overlaps... by inclusion-exclusion:
    # boxes 1.5x.5x.5 (=.375) each, pairwise overlaps .5x.5x.5 (=.125), triple .125 -> 3*.375 - 3*.125 + .125
    assert hypervolume([(2, 1, 1), (1, 2, 1), (1, 1, 2)], (0.5, 0.5, 0.5)) == pytest.approx(0.875)


def test_hypervolume_3d_matches_monte_carlo():
    rng = np.random.default_rng(0)
    pts = rng.random((12, 3))
    samples = rng.random((200_000, 3))
    inside = (samples[:, None, :] <= pts[None, :, :]).all(axis=2).any(axis=1).mean()
    assert hypervolume(pts, (0, 0, 0)) == pytest.approx(inside, abs=0.01)


def test_mip_by_hand():
    w = [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    pts = [(0.8, 0.1), (0.5, 0.5), (0.2, 0.9)]
    # 0.8, 0.5, 0.9 -> mean 0.7333
    assert mip(w, pts, (0, 0), (1, 1)) == pytest.approx((0.8 + 0.5 + 0.9) / 3)
    # normalised against reference (0.1, 0.1) and scale (0.5, 1): (0.7/0.5)=1.4; .5*.8+.5*.4=.6; .8 -> mean
    assert mip(w, pts, (0.1, 0.1), (0.5, 1.0)) == pytest.approx((1.4 + 0.6 + 0.8) / 3)


def test_bootstrap_intervals_hold_the_point_estimate_and_collapse_without_spread():
    rng = np.random.default_rng(1)
    w = np.array([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)])
    noisy = rng.random((3, 40, 2))
    flat = np.broadcast_to(np.array([[0.8, 0.1], [0.5, 0.5], [0.2, 0.9]])[:, None, :], (3, 40, 2))
    out = bootstrap_fronts({"a": noisy, "b": np.array(flat)}, {"a": w, "b": w}, (0, 0), (1, 1), 300, 0)
    lo, hi = out["a"]["hv"]
    assert lo < hypervolume(noisy.mean(axis=1), (0, 0)) < hi
    assert out["b"]["hv"] == pytest.approx((0.8 * 0.1 + 0.5 * 0.4 + 0.2 * 0.4,) * 2)
    assert out["b"]["mip"][0] == pytest.approx(out["b"]["mip"][1])


def test_lattices():
    assert simplex_lattice(2, 11)[0] == (1.0, 0.0) and len(simplex_lattice(2, 11)) == 11
    assert len(simplex_lattice(3, 11)) == 66 and len(simplex_lattice(3, 3)) == 6
    assert all(abs(sum(w) - 1) < 1e-9 for w in simplex_lattice(3, 11) + MOD_SIMPLEX_3)
    assert len(set(MOD_SIMPLEX_3)) == 13
