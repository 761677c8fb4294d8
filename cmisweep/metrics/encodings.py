"""The critics' training pairs (z, s) ~ q(z, s) from encodings computed ONCE.

I-hat's critics draw seeds x steps batches of (z, s) from a few thousand validation images; the
encoder and the layers up to s ran again for every batch (~0.4 s per batch of 50 for the reduced
PixelCNN-VAE on 2 CPU cores, as much as training a critic on it). Where s does not depend on the
sampled z (the PixelCNN-VAE: s is the input of a decoder layer below z), the posterior's mean and
log-variance and s are stored per image and each batch only gathers them and draws z ~ q(z|x)
afresh: the same distribution of pairs. Where s is sampled given z (the DSAE) or the store would
be too large, there is no cache and the caller encodes per batch as before.
"""
from __future__ import annotations

import torch

from cmisweep.critic_training import Sampler
from cmisweep.models.protocol import Gaussian

MAX_BYTES = 2 << 30  # fp32 s of 5000 images of 64 x 28 x 28 is 1 GiB


@torch.no_grad()
def s_ignores_z(model, x: torch.Tensor) -> bool:
    """True when s for given x is the same whatever z (deterministic, nothing sampled)."""
    xb = x[:8]
    qz = model.encode(xb)
    return torch.equal(model.local_features(xb, qz.sample()), model.local_features(xb, qz.sample()))


@torch.no_grad()
def cached_sampler(model, x: torch.Tensor, generator: torch.Generator, chunk: int = 500,
                   s_dtype: torch.dtype = torch.float32) -> Sampler | None:
    """A sampler over stored encodings of x, or None where s depends on z or would not fit.
    s_dtype bf16 when the critics train under bf16 autocast: their first layer casts s to bf16
    anyway, so storing it so gives the same numbers at half the memory traffic per batch."""
    if not s_ignores_z(model, x):
        return None
    s0 = model.local_features(x[:1], model.encode(x[:1]).mean).float()
    if s0.numel() * 4 * len(x) > MAX_BYTES:
        return None
    mean, logvar, s = [], [], []
    for i in range(0, len(x), chunk):
        qz = model.encode(x[i: i + chunk])
        mean.append(qz.mean.float())
        logvar.append(qz.logvar.float())
        s.append(model.local_features(x[i: i + chunk], qz.mean).to(s_dtype))
    mean, logvar, s = torch.cat(mean), torch.cat(logvar), torch.cat(s)

    def sample(batch_size: int):
        idx = torch.randint(len(x), (batch_size,), generator=generator).to(x.device)
        return Gaussian(mean[idx], logvar[idx]).sample(), s[idx]

    return sample
