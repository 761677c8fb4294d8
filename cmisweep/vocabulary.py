"""The words a sweep's results are written in, defined once (docs/design.md section 5): the metric
columns with their labels, units, directions and chance levels; what counts as a collapse; the
verdict words. It imports nothing from cmisweep, so any layer may read it.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Literal, NamedTuple, get_args

# The data sets, by modality: images (binarized, a PixelCNN-VAE) and speech (log spectra, a DSAE)
Dataset = Literal["mnist", "fashion-mnist", "speech-synth", "speech-folder", "timit", "japanese-vowels"]
IMAGE_SETS: tuple[str, ...] = ("mnist", "fashion-mnist")
SPEECH_SETS: tuple[str, ...] = tuple(d for d in get_args(Dataset) if d not in IMAGE_SETS)


def modality(dataset: str) -> str:
    """"image" or "speech": which model family, metrics and claims a data set has."""
    return "image" if dataset in IMAGE_SETS else "speech"


KL = "final/test/kl_z"
IHAT_CONVERGED = "final/ihat_converged"  # 1: the I-hat critics settled by the doubling rule's cap

# A trial has collapsed when its test KL(z) is below this many nats: z then carries almost no
# information about x (an upper bound on I(x;z) of 0.1 nats, 0.14 bits), its probes sit at chance.
# In the committed studies the collapsed trials lie at 0.003-0.020 nats and the lowest trial that
# kept z at 3.78, so any threshold between them classifies the same way; 0.1 is the round number.
COLLAPSE_KL = 0.1

# Active units (Burda et al. 2016, Sect. 5.2): a dimension of z is active when its encoder mean
# varies across x by more than this variance: a mean that moves by less than a tenth of the N(0, 1)
# prior's standard deviation tells the decoder next to nothing about x.
ACTIVE_UNIT_VARIANCE = 0.01


# The evaluation's metric groups (docs/design.md section 7): the names `evaluation.defer` and
# `cmisweep evaluate --metrics` take, with the modalities each applies to and the EvalConfig switch
# that runs it. The ELBO terms, KL(z) and the active units are not among them: every trial computes
# them at its end (they are cheap, and collapse and every front need KL(z)).
EvalMetric = Literal["ihat", "probes", "mcas", "eer", "vc_mcas", "vc_speaker"]


class EvalGroup(NamedTuple):
    modalities: tuple[str, ...]
    columns: tuple[str, ...]  # the headline final/ columns it writes (it writes their spreads and times too)


EVAL_METRICS: dict[str, EvalGroup] = {
    "ihat": EvalGroup(("image", "speech"), ("final/ihat_paper", "final/ihat_exact", "final/ihat_mlp_paper",
                                            "final/ihat_mlp_exact")),  # I-hat(z;s), fresh critics (Table 1)
    "probes": EvalGroup(("image",), ("final/aolr", "final/aosvm")),
    "mcas": EvalGroup(("image",), ("final/mcas", "final/mcas_svm")),  # and the sample grid
    "eer": EvalGroup(("speech",), ("final/eer_z", "final/eer_s")),
    "vc_mcas": EvalGroup(("speech",), ("final/vc_mcas",)),  # on gender
    "vc_speaker": EvalGroup(("speech",), ("final/vc_mcas_speaker",)),  # over the test speakers
}
MODELS_DIR = "models"  # a sweep's kept models: results/<sweep>/models/<trial name>.pt
EVALUATIONS_FILE = "evaluations.parquet"  # the history of `cmisweep evaluate` in a sweep directory


def eval_metrics(kind: str) -> list[str]:
    """The metric groups of a modality, in the order a trial runs them."""
    return [m for m, g in EVAL_METRICS.items() if kind in g.modalities]


def metric_group(column: str) -> str | None:
    """The evaluation's metric group that writes a final/ column (None: computed by every trial)."""
    return next((m for m, g in EVAL_METRICS.items() if column in g.columns), None)


class Metric(NamedTuple):
    label: str  # the report's name, with its unit
    factor: float  # what the report multiplies the stored value by (the paper's units and signs)
    higher: bool | None  # higher is better (None: no direction, e.g. KL(z))
    chance: float | None = None  # a score's value at chance, in stored units (the hypervolume's reference)
    score: bool = False  # a downstream score plotted against KL(z)
    short: str = ""  # the frontier's short name (AoLR, EER(z), ...)


# Stored values are fractions (EER, VC-mCAS, accuracies) and the ELBO itself (negative); the report
# shows EER and VC-mCAS in percent as the paper's Table 2, and -ELBO = recon + KL (positive nats) as
# the paper's Tables 4/5 "ELBO". Chance: ten classes for the images, 50% EER for a verifier that
# knows nothing, two genders for VC-mCAS. The speaker VC-mCAS has no fixed chance level (it depends
# on the test speakers: final/vc_mcas_speaker_chance), so its hypervolume uses 0.
METRICS: dict[str, Metric] = {
    KL: Metric("KL(z) (nats, test)", 1.0, None, short="KL(z)"),
    "final/aolr": Metric("AoLR (accuracy, fraction)", 1.0, True, 0.1, True, "AoLR"),
    "final/aosvm": Metric("AoSVM (accuracy, fraction)", 1.0, True, 0.1, True, "AoSVM"),
    "final/mcas": Metric("mCAS (accuracy, fraction)", 1.0, True, 0.1, True, "mCAS"),
    "final/mcas_svm": Metric("mCAS(SVM) (accuracy, fraction)", 1.0, True, 0.1, True, "mCAS(SVM)"),
    "final/eer_z": Metric("EER(z) [%]", 100.0, False, 0.5, True, "EER(z)"),
    "final/vc_mcas": Metric("VC-mCAS [%]", 100.0, True, 0.5, True, "VC-mCAS"),
    "final/vc_mcas_speaker": Metric("VC-mCAS(speaker) [%]", 100.0, True, 0.0, True, "VC-mCAS(speaker)"),
    "final/ihat_paper": Metric("I-hat(z;s) paper form (nats, test)", 1.0, False),
    "final/ihat_exact": Metric("I-hat(z;s) exact form (nats, test)", 1.0, False, short="I-hat(exact)"),
    # the same two forms read by an MLP critic head (docs/design.md 3.2)
    "final/ihat_mlp_paper": Metric("I-hat(z;s) paper form, MLP critic (nats, test)", 1.0, False),
    "final/ihat_mlp_exact": Metric("I-hat(z;s) exact form, MLP critic (nats, test)", 1.0, False),
    # the exact-form critics read as InfoNCE, a lower bound at most log K (K: final/ihat_nce_negatives)
    "final/ihat_nce": Metric("I-hat(z;s) InfoNCE lower bound (nats, test)", 1.0, False),
    "final/ihat_mlp_nce": Metric("I-hat(z;s) InfoNCE lower bound, MLP critic (nats, test)", 1.0, False),
    "final/test/elbo": Metric("-ELBO (nats, test)", -1.0, False, short="ELBO"),
    "final/eer_s": Metric("EER(s) [%]", 100.0, True, short="EER(s)"),
    "final/active_units": Metric("active units of z", 1.0, None),
}

SCORES = {c: m for c, m in METRICS.items() if m.score}


def short(column: str) -> str:
    """The name a progress line or a summary column gives the metric."""
    return METRICS[column].short if column in METRICS and METRICS[column].short else column.split("/")[-1]


def label(column: str) -> str:
    return METRICS[column].label if column in METRICS else column


def factor(column: str) -> float:
    """What the report multiplies a stored value of `column` by."""
    return METRICS[column].factor if column in METRICS else 1.0


def is_number(v) -> bool:
    """A metric's value: an int or a float, never a bool (a bool is an int to Python, and a flag
    logged as a metric, or averaged for a searcher, would read as 0 or 1)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_file(column: str) -> str:
    """The file name of the KL(z)-vs-score plot of a column (reports/ and the MLflow run)."""
    return f"kl_vs_{column.split('/')[-1]}.png"


class Verdict(StrEnum):
    """The verdict of a claim, used in every report, RUN.md and the README (docs/design.md 5.2)."""

    REPRODUCED = "reproduced"  # Holm-adjusted p < alpha, the effect in the paper's direction
    CONTRADICTED = "contradicted"  # Holm-adjusted p < alpha, the effect against the paper's direction
    INCONCLUSIVE = "inconclusive"  # the design could have decided it, the data did not
    UNDECIDABLE = "undecidable"  # no outcome at this number of seeds could reach Holm's threshold
    NOT_EVALUATED = "not evaluated"  # a trial of the claim's cells lacks the metric
    # its only reading missed the bound against analytic truth (analysis.VERDICT_READINGS): the
    # estimate is reported, untested and outside Holm's family
    NO_VERDICT = "no verdict (estimator off its ground truth)"

    def at(self, n: int) -> str:
        return f"undecidable at n = {n}" if self is Verdict.UNDECIDABLE else str(self)
