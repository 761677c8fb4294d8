"""A sweep's analysis plan, declared in its space before the run (`analysis:`; docs/design.md 5.2).

    analysis:
      family:                       # the claims Holm's correction runs over, each against a baseline
        - {claim: aolr, baseline: beta, sesoi: 0.01}
        - {claim: kl_ratio, baseline: beta, margin: 0.10}
      alpha: 0.05
      kl_cap: 50.0                  # the hypervolume's reference KL(z), stated before the data
      post_hoc: false               # true: the family was written after the data were seen

A sweep without a family is judged on every paper claim it measured against every baseline it
ran, labelled post hoc; every other comparison in the report is descriptive (unadjusted).
"""
from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import Field, model_validator

from cmisweep.config import Strict
from cmisweep.vocabulary import KL, modality


class ClaimSpec(NamedTuple):
    source: str  # where the paper makes it
    text: str
    column: str  # the stored column it is about
    sign: int  # the sign of CMI minus the baseline the paper reports (0: equivalence)


# The paper's claims, CMI-VAE against a baseline at the same gamma and seed (App. 6.1 pairing).
CLAIMS: dict[str, ClaimSpec] = {
    "ihat": ClaimSpec("Table 1", "lower I-hat(z;s)", "final/ihat_paper", -1),
    "aolr": ClaimSpec("Fig. 3", "higher AoLR at the same gamma", "final/aolr", +1),
    "mcas": ClaimSpec("Fig. 3", "higher mCAS at the same gamma", "final/mcas", +1),
    "eer_z": ClaimSpec("Table 2", "lower EER(z)", "final/eer_z", -1),
    "eer_s": ClaimSpec("Table 2", "higher EER(s)", "final/eer_s", +1),
    # an equivalence claim: CMI keeps KL(z) within a margin of the baseline's (Table 5: 16.39
    # against beta's 16.11 at gamma 0.3), tested as one (TOST) on the relative gap
    "kl_ratio": ClaimSpec("Table 5", "KL(z) within the margin of the baseline's", KL, 0),
}
# I-hat's readings, column -> (form, head). The exact form estimates I(z;s), what the claim is about;
# the paper form I(z;s) + KL(q(z)||p(z)), the paper's Table 1 with the model's head.
IHAT_READINGS = {"final/ihat_mlp_exact": ("exact", "MLP head"), "final/ihat_exact": ("exact", "model's head"),
                 "final/ihat_mlp_paper": ("paper", "MLP head"), "final/ihat_paper": ("paper", "model's head")}
# The readings that met their bound against analytic I at each modality's shapes, in every world
# (bench/ihat_truth.py, BENCHMARKS.md section 11; docs/design.md 3.2). Only these decide a claim.
VERDICT_READINGS: dict[str, frozenset[str]] = {"image": frozenset(), "speech": frozenset()}


def reading_name(column: str) -> str:
    """'exact form, MLP head' for final/ihat_mlp_exact: how reports name an I-hat reading."""
    return "{} form, {}".format(*IHAT_READINGS[column])


def claim_columns(name: str, kind: str) -> list[tuple[str, bool]]:
    """The columns a claim is judged on for a modality, each with whether it may carry a verdict.
    The ihat claim is decided by the exact form (I(z;s), what it is about) of a head that met its
    bound (the MLP head first), and reports the paper's Table 1 reading (the paper form, the
    model's head) beside it, without a verdict; with no such head, that reading alone."""
    spec = CLAIMS[name]
    if name != "ihat":
        return [(spec.column, True)]
    deciding = [c for c, (form, _) in IHAT_READINGS.items() if form == "exact" and c in VERDICT_READINGS[kind]]
    return [(c, True) for c in deciding[:1]] + [(spec.column, False)]


# the claims each modality can measure (the others need no data of a kind)
MODALITY_CLAIMS = {"image": {"ihat", "aolr", "mcas", "kl_ratio"}, "speech": {"ihat", "eer_z", "eer_s", "kl_ratio"}}
ClaimName = Literal["ihat", "aolr", "mcas", "eer_z", "eer_s", "kl_ratio"]

# KL(z) caps by modality when a space states none: above every KL(z) the committed studies reached
# (images up to 36 nats at gamma 0.7, speech up to 116 at gamma 0.9), fixed, never from the data.
DEFAULT_KL_CAP = {"image": 50.0, "speech": 150.0}
DEFAULT_MARGIN = 0.10  # Table 5's "within a few percent": 10% either way


class FamilyClaim(Strict):
    claim: ClaimName
    baseline: str  # beta or advmi, or a plug-in preset with a gamma axis
    # the smallest effect of interest, in the report's units (percent for EER): what the seeds are
    # sized for. Omitted: the report gives the minimum detectable effect only.
    sesoi: Annotated[float, Field(gt=0)] | None = None
    # kl_ratio only: the equivalence margin on KL(z)_cmi / KL(z)_baseline - 1
    margin: Annotated[float, Field(gt=0, lt=1)] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.baseline in ("cmi", "vanilla"):
            raise ValueError(f"baseline {self.baseline!r}: CMI is compared with beta or advmi")
        if self.margin is not None and self.claim != "kl_ratio":
            raise ValueError("margin is for the equivalence claim kl_ratio")
        return self


class Analysis(Strict):
    family: list[FamilyClaim] = []
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    kl_cap: Annotated[float, Field(gt=0)] | None = None
    post_hoc: bool = False

    @model_validator(mode="after")
    def _unique(self):
        keys = [(c.claim, c.baseline) for c in self.family]
        if len(set(keys)) != len(keys):
            raise ValueError("family: a (claim, baseline) pair is listed twice")
        return self


def kl_cap(analysis: Analysis | None, dataset: str) -> float:
    """The hypervolume's reference KL(z): the analysis' cap, else the modality's default."""
    if analysis is not None and analysis.kl_cap is not None:
        return analysis.kl_cap
    return DEFAULT_KL_CAP[modality(dataset)]


def check_family(analysis: Analysis, presets: list[str], dataset: str, unpaired: list[str] = ()) -> None:
    """A declared claim needs CMI and its baseline in the sweep, a baseline that pairs with CMI at
    equal gamma (not an `unpaired` plug-in: one without a gamma axis), and a metric its data can give."""
    kind = modality(dataset)
    for i, c in enumerate(analysis.family):
        if c.baseline in unpaired:
            raise ValueError(f"family[{i}]: baseline {c.baseline} is a plug-in without a gamma axis (gamma_param), "
                             "so it has no CMI trial to pair with; it is compared on fronts, hypervolume and matched KL(z)")
        if "cmi" not in presets or c.baseline not in presets:
            raise ValueError(f"family[{i}]: claim {c.claim} compares cmi with {c.baseline}; search.presets must "
                             f"include both (got {', '.join(presets)})")
        if c.claim not in MODALITY_CLAIMS[kind]:
            raise ValueError(f"family[{i}]: claim {c.claim} is not measured on {kind} data ({dataset}); expected one "
                             f"of {', '.join(sorted(MODALITY_CLAIMS[kind]))}")
