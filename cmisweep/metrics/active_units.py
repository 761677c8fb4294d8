"""Active units of z (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
Sect. 5.2): unit u is active when A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01, the variance over inputs x
of the encoder's posterior mean of z_u. A collapsed z (q(z|x) = p(z) whatever x) has none active:
the count measures posterior collapse as an outcome of a trial, next to KL(z).
"""
from __future__ import annotations

import torch

# Burda et al.'s cut (defined with the collapse threshold, in the results' vocabulary)
from cmisweep.vocabulary import ACTIVE_UNIT_VARIANCE as ACTIVE_UNIT_THRESHOLD


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """A_u for each unit from posterior means (N inputs, z_dim): the variance over the N inputs.
    Upcast first: under bf16 autocast the means come in bf16, too coarse to accumulate a variance in."""
    return means.double().var(dim=0, correction=0)


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many units of z are active (Burda et al. 2016, Sect. 5.2) given the posterior means
    E_{q(z|x)}[z] of N inputs, shape (N, z_dim)."""
    return int((unit_activity(means) > threshold).sum())
