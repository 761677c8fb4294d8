"""Metrics: each a function of a trained model and data (DESIGN.md section 3)."""
