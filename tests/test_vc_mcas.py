"""VC-mCAS as in App. 7 of the paper: the protocol run through a real (small, untrained) DSAE's
conversion on an espeak-ng corpus, and the classifier stage on spectra with and without gender
in their time average."""
import os
import shutil

import numpy as np
import pytest
import torch

from cmisweep.config import EvalConfig
from cmisweep.metrics.speaker import gender_accuracy, vc_mcas, vc_samples
from cmisweep.models.dsae import DSAE


def _synth_speech(tmp_path_factory, name: str, **kwargs):
    """A real espeak-ng corpus (skipped, or failed under CMISWEEP_REQUIRE_DATA, without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CMISWEEP_REQUIRE_DATA") == "1":
            pytest.fail("espeak-ng is not installed (make system-deps)")
        pytest.skip("espeak-ng is not installed")
    from cmisweep.data.speech import load_speech
    from cmisweep.data.speech.synth import synth_corpus

    return load_speech("speech-synth", synth_corpus(tmp_path_factory.mktemp(name) / "speech-synth", utterances=3,
                                                    seed=0, **kwargs))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return _synth_speech(tmp_path_factory, "vc", speakers=6)  # 6 speakers: test has ~50 segments of each gender


def small_dsae():
    torch.manual_seed(0)
    return DSAE(x_dim=201, frames=20, z_dim=8, s_dim=8, hidden=16)


def test_protocol_on_a_real_dsae(speech):
    data, model = speech, small_dsae()
    gender = data.utterances["gender"].to_numpy()[data.test_utt.numpy()]
    vc = vc_samples(model, data, segments=20, pairs=6, seed=3)
    # 20 real test segments, 10 per gender, none twice
    assert len(vc.real) == len(set(vc.real)) == 20
    assert list(vc.real_gender) == list(gender[vc.real]) and (vc.real_gender == "F").sum() == 10
    # 6 opposite-gender pairs of those segments, each converted both ways: 12 samples, 6 per gender
    assert len(vc.generated) == len(vc.z_donor) == len(vc.s_donor) == len(vc.label) == 12 and vc.n_pairs == 6
    assert (gender[vc.z_donor] != gender[vc.s_donor]).all()
    assert set(vc.z_donor) | set(vc.s_donor) <= set(vc.real)
    pairs = list(zip(vc.z_donor, vc.s_donor))
    assert sorted(pairs) == sorted((s, z) for z, s in pairs) and len({frozenset(p) for p in pairs}) == 6
    # labelled with the z donor's gender (the voice it should carry), not the s donor's
    assert list(vc.label) == list(gender[vc.z_donor]) and (vc.label == "F").sum() == 6
    # each sample is the model's conversion: the s donor's content decoded with the z donor's z
    x = data.test_x
    want = model.convert(x[torch.as_tensor(vc.s_donor)], model.encode(x[torch.as_tensor(vc.z_donor)]).mean)
    assert vc.generated.shape == (12, 20, 201) and torch.allclose(vc.generated, want, atol=1e-5)
    # the seed picks the sample
    again, other = vc_samples(model, data, 20, 6, seed=3), vc_samples(model, data, 20, 6, seed=4)
    assert np.array_equal(again.real, vc.real) and not np.array_equal(other.real, vc.real)

    out = vc_mcas(model, data, pairs=6, seed=3, segments=20)
    assert (out["vc_mcas_n_real"], out["vc_mcas_n_pairs"]) == (20, 6)
    assert 0.0 <= out["vc_mcas"] <= 1.0 and 0.0 <= out["vc_mcas_real"] <= 1.0


def test_a_small_test_split_gives_as_many_as_it_has_balanced(speech):
    data, model = speech, small_dsae()
    gender = data.utterances["gender"].to_numpy()[data.test_utt.numpy()]
    n = min((gender == "F").sum(), (gender == "M").sum())
    assert n < 250  # the paper's 500 / 250 cannot be met here
    vc = vc_samples(model, data, segments=500, pairs=250, seed=0)
    assert len(vc.real) == 2 * n and (vc.real_gender == "F").sum() == n and vc.n_pairs == n
    out = vc_mcas(model, data, seed=0)  # the defaults are the paper's 500 / 250
    assert (out["vc_mcas_n_real"], out["vc_mcas_n_pairs"]) == (2 * n, n)


def _spectra(mean_sign: np.ndarray, rng, frames: int = 20, dims: int = 12, flicker_sign=None) -> torch.Tensor:
    """Noise segments with +-1.5 x mean_sign (+1 female, -1 male) in dims 0-2 at every frame: gender in
    the time average. flicker_sign: +-3 in dims 3-5 alternating over time, which averages out."""
    x = rng.normal(size=(len(mean_sign), frames, dims))
    x[:, :, :3] += 1.5 * mean_sign[:, None, None]
    if flicker_sign is not None:
        alternate = np.where(np.arange(frames) % 2 == 0, 1.0, -1.0)
        x[:, :, 3:6] += 3.0 * flicker_sign[:, None, None] * alternate[None, :, None]
    return torch.as_tensor(x, dtype=torch.float32)


def test_classifier_stage_tells_conversions_that_carry_the_z_donors_gender():
    rng = np.random.default_rng(0)
    label = np.array(["F", "M"] * 100)  # the z donors' genders
    sign = np.where(label == "F", 1.0, -1.0)
    real_gender = np.array(["M", "F"] * 100)
    real_sign = np.where(real_gender == "F", 1.0, -1.0)
    real = _spectra(real_sign, rng, flicker_sign=real_sign)
    # conversions that carry the z donor's voice
    assert gender_accuracy(_spectra(sign, rng), label, real, real_gender) > 0.9
    # conversions that keep the s donor's voice (z ignored): the labels point the wrong way
    assert gender_accuracy(_spectra(-sign, rng), label, real, real_gender) < 0.1
    # the classifier reads time averages: a frame pattern that contradicts the real speech's but
    # averages out does not fool it (a reading of single frames would score near 0)
    assert gender_accuracy(_spectra(sign, rng, flicker_sign=-sign), label, real, real_gender) > 0.9


def test_config_defaults_are_the_papers_and_pairs_must_fit_the_segments():
    e = EvalConfig()
    assert (e.vc_protocol, e.vc_segments, e.vc_pairs) == ("paper", 500, 250)
    with pytest.raises(ValueError, match=r"vc_pairs = 300 > vc_segments / 2 = 250"):
        EvalConfig(vc_pairs=300)
    assert EvalConfig(vc_protocol="utterance", vc_pairs=400).vc_pairs == 400  # utterance pairs: no segments


# --- speaker-identity VC-mCAS (cmisweep.metrics.vc_speaker) ------------------------------------

@pytest.fixture(scope="module")
def many_speakers(tmp_path_factory):
    """16 espeak-ng voices, half of them test speakers: 8 classes, chance 1/8."""
    return _synth_speech(tmp_path_factory, "vcs", speakers=16, test_fraction=0.5)


class VoiceInZ(torch.nn.Module):
    """A model whose z is the voice: z = the segment's mean spectrum, and a conversion puts that
    mean under the content's deviations from its own."""

    def encode(self, x):
        from cmisweep.models.protocol import Gaussian

        return Gaussian(x.float().mean(1), torch.zeros_like(x[:, 0]))

    def convert(self, x, z):
        return x - x.mean(1, keepdim=True) + z[:, None, :]


class CollapsedZ(VoiceInZ):
    """z carries nothing (q(z|x) = p(z)): a conversion is the content's segment as it was."""

    def encode(self, x):
        g = super().encode(x)
        return type(g)(torch.zeros_like(g.mean), g.logvar)

    def convert(self, x, z):
        return x.clone()


def test_speaker_vc_mcas_separates_a_voice_carrying_z_from_a_collapsed_one(many_speakers):
    from cmisweep.metrics.vc_speaker import vc_mcas_speaker

    data = many_speakers
    voice = vc_mcas_speaker(VoiceInZ(), data, per_speaker=20, seed=0)
    collapsed = vc_mcas_speaker(CollapsedZ(), data, per_speaker=20, seed=0)
    assert voice["vc_mcas_speaker_n"] == 8 and voice["vc_mcas_speaker_chance"] == pytest.approx(1 / 8)
    # the real-segment baseline is the same for both: it never looks at the model
    assert voice["vc_mcas_speaker_real"] == collapsed["vc_mcas_speaker_real"] > 0.5
    assert voice["vc_mcas_speaker"] > 0.5 > 0.25 > collapsed["vc_mcas_speaker"]
    # through the evaluation suite of a real (small) DSAE: the keys a sweep reports
    from cmisweep.metrics.speech import evaluate_speech

    cfg = EvalConfig(ihat=None, eer=False, vc_mcas=False, sample_grid=False, vc_speaker_segments=5)
    out, _ = evaluate_speech(small_dsae(), data, cfg, None)
    assert 0 <= out["vc_mcas_speaker"] <= 1 and out["vc_mcas_speaker_n"] == 8 and "time/vc_speaker_s" in out
