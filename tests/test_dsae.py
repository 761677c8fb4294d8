import types

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from cmisweep import regularizer as R
from cmisweep.config import TrainConfig
from cmisweep.metrics.speaker import eer, pair_scores, utterance_embeddings, vc_mcas
from cmisweep.models.critics import build_critics
from cmisweep.models.dsae import DSAE
from cmisweep.models.protocol import SequentialVAE
from cmisweep.training import Trainer
from cmisweep.regularizer_api import PaperJ


def small(**kw):
    torch.manual_seed(0)
    return DSAE(x_dim=kw.get("x_dim", 12), frames=kw.get("frames", 8), z_dim=6, s_dim=5, hidden=16)


def test_prior_is_causal_and_reads_the_given_path():
    """p(s_t | s_<t): its parameters at t move with s_1..s_t-1 and never with s_t or later."""
    m = small()
    s = torch.randn(2, 8, 5, requires_grad=True)
    prior = m.prior_s(s)
    for t in range(8):
        (g,) = torch.autograd.grad(prior.mean[:, t].sum() + prior.logvar[:, t].sum(), s, retain_graph=True)
        assert torch.all(g[:, t:] == 0), f"p(s_{t}) sees s_{t} or later"
        if t > 0:
            assert g[:, t - 1].abs().sum() > 0, f"p(s_{t}) ignores s_{t - 1}"
    # the first step reads s_0 = 0: the same for every path
    other = m.prior_s(torch.randn(2, 8, 5))
    assert torch.allclose(prior.mean[:, 0], other.mean[:, 0])


def test_elbo_terms_use_the_posterior_path():
    m = small()
    x = torch.randn(3, 8, 12)
    torch.manual_seed(1)
    t = m.elbo_terms(x)
    assert t.recon.shape == t.kl_z.shape == t.kl_s.shape == (3,) and t.s.shape == (3, 8, 5)
    assert torch.all(t.kl_s > 0) and isinstance(m, SequentialVAE)
    # recompute KL(s) by hand: q along the sampled path against the prior fed that same path
    torch.manual_seed(1)
    qz = m.encode(x)
    z = qz.sample()
    s, qs = m.posterior_s(x, z)
    from cmisweep.models.protocol import gaussian_kl

    assert torch.allclose(gaussian_kl(qs, m.prior_s(s)).sum((1, 2)), t.kl_s, rtol=1e-5)
    assert torch.equal(s, t.s)


def test_decoder_variance_is_learned_and_training_improves_the_elbo():
    m = small()
    reg = R.preset("cmi", 0.3)
    critics = build_critics(6, m.critic_spec, reg.uses_m, reg.uses_c, width=16)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, 12, generator=g) * 0.3 + torch.randn(400, 1, 12, generator=g)  # a global offset per sequence
    tr = Trainer(m, PaperJ(reg, critics), x, x[:100], TrainConfig(epochs=6, batch_size=40, lr=1e-2), critic_lr=1e-2)
    before = tr.validate()["elbo"]
    tr.fit(6)
    after = tr.validate()
    assert after["elbo"] > before + 5 and after["kl_z"] > 1  # z picks up the per-sequence offset
    assert not torch.all(m.dec_logvar == 0)


def test_eer_on_scores_with_a_known_eer():
    rng = np.random.default_rng(0)
    n = 100_000
    scores = np.concatenate([rng.normal(1, 1, n), rng.normal(-1, 1, n)])
    same = np.concatenate([np.ones(n), np.zeros(n)])
    assert eer(scores, same) == pytest.approx(norm.cdf(-1), abs=0.004)  # threshold 0: both rates Phi(-1)
    assert eer(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0])) == 0.0
    # one error on each side of 4: 1/4 false accepts = 1/4 false rejects
    assert eer(np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.5, 0.4, 0.1]), np.array([1, 1, 1, 1, 0, 0, 0, 0])) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        eer(np.array([0.1, 0.2]), np.array([1, 1]))


class _Stub:
    """Stands in for a trained DSAE: z = the utterance's voice code, s = noise (no speaker)."""

    def __init__(self, code, ignore_z_in_convert=False):
        self.code, self.ignore = code, ignore_z_in_convert

    def eval(self):
        return self

    def encode(self, x):
        return types.SimpleNamespace(mean=x[:, 0, :4])

    def local_features(self, x, z, sample=False):
        return x[:, :, 4:8]

    def convert(self, x, z_target):
        if self.ignore:
            return x
        out = x.clone()
        out[:, 0, :4] = z_target  # the donor's voice replaces the source's
        out[:, :, 8:] = z_target[:, None, :1] * 2
        return out


def fake_speech(n_spk=6, utts=4, segs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, xs, utt_idx = [], [], []
    for k in range(n_spk):
        gender = "F" if k % 2 else "M"
        voice = torch.randn(4, generator=g) + (2.0 if gender == "F" else -2.0)
        for u in range(utts):
            r = len(rows)
            rows.append({"utterance": f"s{k}u{u}", "speaker": f"s{k}", "gender": gender, "split": "test"})
            for _ in range(segs):
                x = torch.randn(5, 12, generator=g)
                x[0, :4] = voice + 0.1 * torch.randn(4, generator=g)
                x[:, 8:] = voice[0] * 2
                xs.append(x)
                utt_idx.append(r)
    x, utt = torch.stack(xs), torch.tensor(utt_idx)
    return types.SimpleNamespace(test_x=x, test_utt=utt, train_x=x, train_utt=utt, utterances=pd.DataFrame(rows))


def test_speaker_eer_and_pooling():
    data = fake_speech()
    rows, ez, es = utterance_embeddings(_Stub(None), data.test_x, data.test_utt)
    assert len(rows) == 24 and ez.shape == (24, 4)
    # pooled = mean of the segments' means
    first = data.test_x[data.test_utt == rows[0]][:, 0, :4].mean(0).numpy()
    assert np.allclose(ez[0], first, atol=1e-6)
    speakers = data.utterances["speaker"].to_numpy()[rows]
    assert eer(*pair_scores(ez, speakers)) < 0.05  # z holds the speaker
    assert eer(*pair_scores(es, speakers)) > 0.3  # s is noise


@pytest.mark.parametrize("protocol", ["paper", "utterance"])
def test_vc_mcas_rewards_conversions_that_carry_the_donors_voice(protocol):
    data = fake_speech()
    good = vc_mcas(_Stub(None), data, pairs=20, protocol=protocol, segments=40)
    bad = vc_mcas(_Stub(None, ignore_z_in_convert=True), data, pairs=20, protocol=protocol, segments=40)
    assert good["vc_mcas"] > 0.9 and bad["vc_mcas"] < 0.1  # ignored z: the labels point the wrong way
    assert good["vc_mcas_real"] > 0.9
