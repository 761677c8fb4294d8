"""Data sets: binarized MNIST / Fashion-MNIST (images), speech corpora (later issues)."""
from __future__ import annotations

from cmisweep.data.images import IMAGE_DATASETS, ImageData, load_images


def load_dataset(cfg, device="cpu"):
    """The data a DataConfig names, on `device`."""
    if cfg.dataset in IMAGE_DATASETS:
        return load_images(cfg.dataset, cfg.path, split_seed=cfg.split_seed, train_size=cfg.train_size,
                           val_size=cfg.val_size, test_size=cfg.test_size, device=device)
    raise ValueError(f"unknown dataset {cfg.dataset!r}")


__all__ = ["IMAGE_DATASETS", "ImageData", "load_dataset", "load_images"]
