"""PixelCNN-VAE for 28x28 binary images (the paper's Sect. 6.2 and App. 3; docs/design.md section 2).

Decoder: masked convolutions, kernel sizes 7,7,7,7,7,5,5,5,5,3,3,3,3 with 64 maps by default, mask
A first and B after, ReLU between, a 1x1 convolution to one Bernoulli logit per pixel. z (32) goes
through a linear map to a (4, 28, 28) map that joins the input of every layer from `s_layer` (6)
on. s := the input of layer `s_layer` (the output of the fifth layer), so s is a deterministic
function of x and KL(s) is absent. Encoder: a small conv net to a diagonal Gaussian q(z|x).

`decoder="he2019"` swaps the decoder for the residual PixelCNN of He et al. (2019) that Sect. 6.1
of the paper names (cmisweep.models.he2019), with the same z map, s and protocol.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cmisweep.models.he2019 import He2019Decoder
from cmisweep.models.masked import MaskedConv2d
from cmisweep.models.protocol import CriticSpec, ElboTerms, Gaussian


def paper_kernel_sizes(layers: int) -> list[int]:
    """7x7 for the first five layers, then 5x5 and 3x3 halves (13 layers: 5 x 7, 4 x 5, 4 x 3)."""
    n7 = min(5, layers)
    rest = layers - n7
    n5 = math.ceil(rest / 2)
    return [7] * n7 + [5] * n5 + [3] * (rest - n5)


class ConvEncoder(nn.Module):
    """x (B, 1, H, W) -> q(z|x): two stride-2 convs, a hidden layer, mean and log-variance."""

    def __init__(self, z_dim: int, image_size: int = 28, channels: int = 64, hidden: int = 256):
        super().__init__()
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(1, channels // 2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * z_dim),
        )

    def forward(self, x: torch.Tensor) -> Gaussian:
        mean, logvar = self.net(x).chunk(2, dim=-1)
        return Gaussian(mean.float(), logvar.float().clamp(-12.0, 8.0))


class PixelCNNVAE(nn.Module):
    def __init__(
        self,
        z_dim: int = 32,
        layers: int = 13,
        maps: int = 64,
        kernel_sizes: list[int] | None = None,
        s_layer: int = 6,
        z_channels: int = 4,
        image_size: int = 28,
        encoder_channels: int = 64,
        cropped: bool = True,
        decoder: str = "plain",
    ):
        super().__init__()
        if decoder not in ("plain", "he2019"):
            raise ValueError(f"decoder must be 'plain' or 'he2019', got {decoder!r}")
        kernel_sizes = list(kernel_sizes) if kernel_sizes else paper_kernel_sizes(layers)
        if len(kernel_sizes) != layers:
            raise ValueError(f"kernel_sizes has {len(kernel_sizes)} entries for {layers} layers")
        if not 2 <= s_layer <= layers:
            raise ValueError(f"s_layer = {s_layer} must be between 2 and layers = {layers}")
        self.z_dim, self.s_layer, self.image_size, self.z_channels = z_dim, s_layer, image_size, z_channels
        self.kernel_sizes = kernel_sizes
        self.encoder = ConvEncoder(z_dim, image_size, encoder_channels)
        self.z_to_map = nn.Linear(z_dim, z_channels * image_size * image_size)
        self.decoder = decoder
        if decoder == "he2019":
            self.he2019 = He2019Decoder(layers, maps, kernel_sizes, s_layer, z_channels, cropped)
        else:
            self.layers = nn.ModuleList(
                MaskedConv2d(
                    1 if i == 0 else maps, maps, k, "A" if i == 0 else "B",
                    cond_channels=z_channels if i + 1 >= s_layer else 0, cropped=cropped,
                )
                for i, k in enumerate(kernel_sizes)
            )
            self.out = nn.Conv2d(maps, 1, 1)
        self.critic_spec = CriticSpec((maps, image_size, image_size), "dot")
        # the fast training path (train.precision / memory_format "auto"), measured in bench/train_step.py
        self.fast_precision, self.prefers_channels_last = "bf16", True

    # --- protocol -----------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> Gaussian:
        return self.encoder(x.float())

    def elbo_terms(self, x: torch.Tensor) -> ElboTerms:
        x = x.float()
        qz = self.encode(x)
        z = qz.sample()
        logits, s = self.decode(x, self.conditions(z))
        recon = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").sum((1, 2, 3))
        kl_z = qz.kl_standard_normal()
        return ElboTerms(recon, kl_z, torch.zeros_like(kl_z), z, s, qz.mean)

    def local_features(self, x: torch.Tensor, z: torch.Tensor | None = None, sample: bool = True) -> torch.Tensor:
        """s = the input of layer s_layer; it depends on x alone (z joins from that layer on), so
        it is deterministic and `sample` changes nothing."""
        if self.decoder == "he2019":
            return self.he2019(x.float(), None, until_s=True)[1]
        h = x.float()
        for layer in self.layers[: self.s_layer - 1]:
            h = F.relu(layer(h))
        return h

    @torch.no_grad()
    def generate(self, z: torch.Tensor, n: int = 1, noise: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n binary images per z by ancestral sampling in raster order, with cached activations
        (cmisweep.models.sampling): one position per layer per step instead of a full pass.

        noise: uniform (len(z) * n, 1, H, W); pixel = 1 where noise < p(pixel = 1 | pixels before).
        The same noise gives the same images as generate_naive. Sampling is in eval mode (BatchNorm
        with its running statistics) whatever the model's mode.
        """
        from cmisweep.models.sampling import cached_generate

        z = z.repeat_interleave(n, dim=0)
        if noise is None:
            noise = torch.rand(z.shape[0], 1, self.image_size, self.image_size, device=z.device)
        with _eval_mode(self):
            return cached_generate(self, z, noise, dtype)

    @torch.no_grad()
    def generate_naive(self, z: torch.Tensor, n: int = 1, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The reference sampler: one full decoder pass per pixel (784 passes)."""
        z = z.repeat_interleave(n, dim=0)
        side = self.image_size
        if noise is None:
            noise = torch.rand(z.shape[0], 1, side, side, device=z.device)
        with _eval_mode(self):
            conds = self.conditions(z)
            x = torch.zeros(z.shape[0], 1, side, side, device=z.device)
            for r in range(side):
                for col in range(side):
                    logits, _ = self.decode(x, conds)
                    x[:, :, r, col] = (noise[:, :, r, col] < torch.sigmoid(logits[:, :, r, col].float())).float()
        return x

    # --- the decoder ---------------------------------------------------------------------------

    def conditions(self, z: torch.Tensor) -> list[torch.Tensor | None]:
        """Each layer's contribution from the z map (None for layers before s_layer)."""
        zmap = self.z_to_map(z).view(z.shape[0], self.z_channels, self.image_size, self.image_size)
        if self.decoder == "he2019":
            return self.he2019.conditions(zmap)
        return [layer.condition(zmap) if layer.cond is not None else None for layer in self.layers]

    def decode(self, x: torch.Tensor, conds: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of p(x | z) (B, 1, H, W) and s, the input of layer s_layer."""
        if self.decoder == "he2019":
            return self.he2019(x, conds)
        h, s = x, None
        for i, (layer, cond) in enumerate(zip(self.layers, conds), start=1):
            if i == self.s_layer:
                s = h
            h = F.relu(layer(h, cond))
        return self.out(h), s


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the block, the previous mode after: sampling never uses (or updates) the
    BatchNorm batch statistics of the he2019 decoder, which would also break causality."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)
