"""cmisweep: hyperparameter sweeps of sequential VAEs under information-theoretic regularizers
(CMI-VAE, Akuzawa et al., Machine Learning 2021, and its baselines)."""

__version__ = "0.1.0"
