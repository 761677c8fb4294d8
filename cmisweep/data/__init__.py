"""Data sets: binarized MNIST / Fashion-MNIST (images), speech corpora (later issues)."""
from __future__ import annotations

from pathlib import Path

import torch

from cmisweep.data.images import IMAGE_DATASETS, ImageData, load_images


def load_dataset(cfg, device="cpu"):
    """The data a DataConfig names, on `device`."""
    if cfg.dataset in IMAGE_DATASETS:
        return load_images(cfg.dataset, cfg.path, split_seed=cfg.split_seed, train_size=cfg.train_size,
                           val_size=cfg.val_size, test_size=cfg.test_size, device=device)
    from cmisweep.data.speech import load_speech

    data = load_speech(cfg.dataset, cfg.path, segment_frames=cfg.segment_frames, val_fraction=cfg.val_fraction,
                       split_seed=cfg.split_seed, max_utterances=cfg.max_utterances, device=device)
    g = torch.Generator().manual_seed(cfg.split_seed)
    if cfg.train_size is not None and cfg.train_size < len(data.train_x):
        keep = torch.randperm(len(data.train_x), generator=g)[: cfg.train_size].to(data.train_x.device)
        data.train_x, data.train_utt = data.train_x[keep], data.train_utt[keep]
    if cfg.val_size is not None and cfg.val_size < len(data.val_x):
        keep = torch.randperm(len(data.val_x), generator=g)[: cfg.val_size].to(data.val_x.device)
        data.val_x, data.val_utt = data.val_x[keep], data.val_utt[keep]
    return data


def locate(cfg) -> Path:
    """The directory a DataConfig's data is read from."""
    if cfg.dataset in IMAGE_DATASETS:
        from cmisweep.data.images import locate as locate_images

        return locate_images(cfg.dataset, cfg.path)
    from cmisweep.data.speech import locate as locate_speech

    return locate_speech(cfg.dataset, cfg.path)


def example_shape(cfg) -> tuple[int, ...]:
    """The shape of one example, known without loading the data (for plans and benchmarks)."""
    if cfg.dataset in IMAGE_DATASETS:
        return (1, 28, 28)
    if cfg.dataset == "japanese-vowels":
        return (7, 12)
    return (cfg.segment_frames, 201)


def random_batch(cfg, n: int) -> torch.Tensor:
    """Data-like noise of the right shape and type: binary images, or normalized features."""
    shape = example_shape(cfg)
    if cfg.dataset in IMAGE_DATASETS:
        return (torch.rand(n, *shape) < 0.3).to(torch.uint8)
    return torch.randn(n, *shape)


__all__ = ["IMAGE_DATASETS", "ImageData", "load_dataset", "load_images"]
