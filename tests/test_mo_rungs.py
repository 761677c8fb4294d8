"""MO-ASHA's rung decision (cmisweep/sweep/mo_rungs.py) on records with known answers."""
import numpy as np
import pytest

from cmisweep.sweep.mo_rungs import collapsed_for_good, contributions, goes_on, order

REF = np.array([50.0, 0.0])  # KL(z) cap, minus chance of a score that is negated (minimized)


def test_the_front_comes_first_and_its_ties_go_by_hypervolume_contribution():
    # (KL(z), -AoLR): 0-2 on the front, 3 dominated by 1, 4 dominated by everything
    p = np.array([[2.0, -0.5], [5.0, -0.7], [9.0, -0.72], [6.0, -0.6], [20.0, -0.3]])
    c = contributions(p[:3], REF)
    assert c[1] == pytest.approx((9 - 5) * (0.7 - 0.5)) and c[2] == pytest.approx((50 - 9) * (0.72 - 0.7))
    ranked = order(p, REF)
    assert set(ranked[:3]) == {0, 1, 2} and ranked[3:] == [3, 4]
    expected = sorted(range(3), key=lambda i: -contributions(p[:3], REF)[i])
    assert ranked[:3] == expected


@pytest.mark.parametrize("eta", [2, 3])
def test_a_front_no_larger_than_the_promotion_count_always_goes_on(eta):
    """Records of a noisy trade-off arriving in any order: every point of the front of what the
    rung has recorded goes on whenever that front has at most ceil(n / eta) points (it is never cut
    for a dominated point), and the final front's points are among them."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(0)
    kl = rng.uniform(1, 40, 12)
    p = np.column_stack([kl, -(0.5 + 0.005 * kl) + rng.uniform(0, 0.05, 12)])
    final = set(NonDominatedSorting().do(p, only_non_dominated_front=True).tolist())
    checked = 0
    for arrival in (list(range(12)), list(reversed(range(12))), list(rng.permutation(12))):
        for n in range(1, 13):
            seen = arrival[:n]
            front = {seen[j] for j in NonDominatedSorting().do(p[seen], only_non_dominated_front=True)}
            assert final & set(seen) <= front
            if len(front) <= np.ceil(n / eta):
                checked += 1
                assert all(goes_on(p[seen], seen.index(j), eta, REF) for j in front), (seen, front)
    assert checked >= 3  # the property was exercised


def test_equal_contributions_go_by_the_order_recorded():
    p = np.array([[1.0, -0.2], [2.0, -0.1], [1.0, -0.2]])  # 0 and 2 identical
    assert order(p, REF)[0] in (0, 2) and order(p, REF) == order(p, REF)
    assert goes_on(p, 0, 3, REF) != goes_on(p, 2, 3, REF)  # one slot: the earlier record takes it


def test_collapse_is_final_only_when_it_lasts_from_the_minimum_epoch():
    assert collapsed_for_good([0.01, 0.02, 0.03], 0.1, 3)
    assert not collapsed_for_good([0.01, 0.02], 0.1, 3)  # not yet at the minimum epoch
    assert not collapsed_for_good([0.01, 0.02, 0.3], 0.1, 3)  # KL(z) rose: not a collapse
    assert not collapsed_for_good([0.01, 0.02, 0.05, 0.4], 0.1, 3)
