"""Metrics: each a function of a trained model and data (docs/design.md section 3)."""
