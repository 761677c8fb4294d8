"""cmisweep: hyperparameter sweeps of sequential VAEs under information-theoretic regularizers
(CMI-VAE, Akuzawa et al., Machine Learning 2021, and its baselines)."""

__version__ = "0.1.0"


def load(run_or_dir, tracking_uri: str | None = None):
    """(model, TrialConfig) of a finished trial: an MLflow run id, a runs:/ URI, or a directory
    holding its model (cmisweep.saved)."""
    from cmisweep.saved import load as _load

    return _load(run_or_dir, tracking_uri)
