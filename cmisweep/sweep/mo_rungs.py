"""MO-ASHA's decision at a rung (Schmucker et al. 2021, "Multi-objective asynchronous successive
halving"), as plain functions over the rung's records; the Tune scheduler around them keeps the
records and asks.

ASHA lets a trial that reaches a rung go on when it is among the top 1/eta of every trial recorded
at that rung so far (so the first always goes on). With several objectives "top" is an order:
the records are ranked by non-dominated sorting (pymoo), front by front, and within the front that
the cut falls into by each point's hypervolume contribution to that front (largest first), the
reference point fixed before the data, as the reports' (docs/design.md 5.3); equal contributions
go by the order the points were recorded, so the decision is deterministic. Every objective is
minimized here (a score to maximize is passed negated).
"""
from __future__ import annotations

import math

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def contributions(front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each point's exclusive hypervolume: HV(front) - HV(front without it); 0 beyond ref."""
    inside = (front < ref).all(axis=1)
    hv = HV(ref_point=ref)
    total = float(hv(front[inside])) if inside.any() else 0.0
    out = np.zeros(len(front))
    for i in np.flatnonzero(inside):
        rest = front[inside & (np.arange(len(front)) != i)]
        out[i] = total - (float(hv(rest)) if len(rest) else 0.0)
    return out


def order(points: np.ndarray, ref: np.ndarray) -> list[int]:
    """The indices of `points` (rows, objectives minimized) best first: by non-dominated front,
    within a front by hypervolume contribution (descending), then by index."""
    points = np.asarray(points, float)
    if len(points) == 0:
        return []
    fronts = NonDominatedSorting().do(points, only_non_dominated_front=False)
    ranked: list[int] = []
    for front in fronts:
        front = np.sort(np.asarray(front))
        c = contributions(points[front], ref)
        ranked += [int(front[j]) for j in sorted(range(len(front)), key=lambda j: (-c[j], front[j]))]
    return ranked


def goes_on(points: np.ndarray, index: int, eta: float, ref: np.ndarray) -> bool:
    """Whether the record `index` is among the top ceil(n / eta) of the n records at the rung."""
    keep = math.ceil(len(points) / eta)
    return index in order(points, ref)[:keep]


def collapsed_for_good(kl_by_epoch: list[float], threshold: float, min_epoch: int) -> bool:
    """A trial may be stopped as collapsed once its KL(z) has stayed below the threshold at every
    epoch from min_epoch on, and it has reached min_epoch: a KL(z) that rises late is not a collapse."""
    if len(kl_by_epoch) < min_epoch:
        return False
    return all(k < threshold for k in kl_by_epoch[min_epoch - 1:])
