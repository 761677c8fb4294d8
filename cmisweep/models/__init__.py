"""Models behind one protocol (cmisweep.models.protocol.SequentialVAE); build one from its config."""
from __future__ import annotations

from cmisweep.models.protocol import CriticSpec, ElboTerms, Gaussian, SequentialVAE


def build_model(cfg, x_shape: tuple[int, ...] | None = None):
    """The model a config's `kind` names, for data of shape x_shape per example."""
    if cfg.kind == "dsae":
        from cmisweep.models.dsae import DSAE

        frames, x_dim = x_shape if x_shape is not None else (20, 201)
        return DSAE(x_dim=x_dim, frames=frames, z_dim=cfg.z_dim, s_dim=cfg.s_dim, hidden=cfg.hidden)
    if cfg.kind == "pixelcnn_vae":
        from cmisweep.models.pixelcnn import PixelCNNVAE

        return PixelCNNVAE(
            z_dim=cfg.z_dim, layers=cfg.layers, maps=cfg.maps, kernel_sizes=cfg.kernel_sizes,
            s_layer=cfg.s_layer, z_channels=cfg.z_channels, encoder_channels=cfg.encoder_channels,
            decoder=cfg.decoder,
        )
    if cfg.kind == "plugin":  # a user's SequentialVAE (config.PluginModelConfig)
        cls = cfg.plugin_class
        return cls(cls.Params.model_validate(cfg.params), tuple(x_shape))
    raise ValueError(f"unknown model kind {cfg.kind!r}")


__all__ = ["CriticSpec", "ElboTerms", "Gaussian", "SequentialVAE", "build_model"]
