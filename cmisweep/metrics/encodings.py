"""The critics' training pairs (z, s) ~ q(z, s) from encodings computed ONCE.

I-hat's critics draw seeds x steps batches of (z, s) from a few thousand validation images; the
encoder and the layers up to s ran again for every batch (~0.4 s per batch of 50 for the reduced
PixelCNN-VAE on 2 CPU cores, as much as training a critic on it). Where s does not depend on the
sampled z (the PixelCNN-VAE: s is the input of a decoder layer below z), the posterior's mean and
log-variance and s are stored per image and each batch only gathers them and draws z ~ q(z|x)
afresh: the same distribution of pairs. Where s is sampled given z (the DSAE) or the store would
be too large, there is no such cache. Where s is sampled given z (the DSAE), `pooled_sampler` draws
a pool of pairs once, `draws` (z, s) pairs per sequence, and batches gather from it: the DSAE's
LSTMs encoding every batch were 55% of a fixed-step I-hat (34 of 62 s), and the doubling rule
(docs/design.md section 3) trains its critics up to 15 times the steps on the same pairs.
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


@torch.no_grad()
def pooled_sampler(model, x: torch.Tensor, generator: torch.Generator, draws: int, chunk: int = 500,
                   s_dtype: torch.dtype = torch.float32) -> Sampler | None:
    """A sampler over a pool of draws x len(x) pairs (z ~ q(z|x), s ~ q(s|x, z) given that z), or
    None where the pool would not fit. A batch picks pairs uniformly: each pair's distribution is
    q(z, s)'s, as a fresh encoding's is; only repeats of one sequence's pair come from the pool."""
    s0 = model.local_features(x[:1], model.encode(x[:1]).mean).float()
    if s0.numel() * s0.element_size() * len(x) * draws > MAX_BYTES:
        return None
    zs, ss = [], []
    for _ in range(draws):
        for i in range(0, len(x), chunk):
            z = model.encode(x[i: i + chunk]).sample()
            zs.append(z.float())
            ss.append(model.local_features(x[i: i + chunk], z).to(s_dtype))
    z, s = torch.cat(zs), torch.cat(ss)

    def sample(batch_size: int):
        idx = torch.randint(len(z), (batch_size,), generator=generator).to(z.device)
        return z[idx], s[idx]

    return sample
