"""The sweep service: search spaces, the Ray Tune trainable, MLflow tracking, the runner."""
