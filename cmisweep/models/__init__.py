"""Models behind one protocol (cmisweep.models.protocol.SequentialVAE); build one from its config."""
from __future__ import annotations

from cmisweep.models.protocol import CriticSpec, ElboTerms, Gaussian, SequentialVAE


def build_model(cfg):
    """The model a config's `kind` names."""
    if cfg.kind == "pixelcnn_vae":
        from cmisweep.models.pixelcnn import PixelCNNVAE

        return PixelCNNVAE(
            z_dim=cfg.z_dim, layers=cfg.layers, maps=cfg.maps, kernel_sizes=cfg.kernel_sizes,
            s_layer=cfg.s_layer, z_channels=cfg.z_channels, encoder_channels=cfg.encoder_channels,
        )
    raise ValueError(f"unknown model kind {cfg.kind!r}")


__all__ = ["CriticSpec", "ElboTerms", "Gaussian", "SequentialVAE", "build_model"]
