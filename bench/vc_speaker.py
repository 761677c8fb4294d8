"""Does speaker-identity VC-mCAS separate a trained DSAE from one whose z collapsed? (issue 13)

Synthesizes 16 espeak-ng voices x 3 utterances (half the speakers in test: 8 classes, chance
1/8), trains a small DSAE with the plain ELBO for STEPS steps, and scores: the trained model; the
same model with q(z|x) collapsed to a constant (z_head's mean weights zeroed); an untrained one.
Usage: python bench/vc_speaker.py [STEPS=1500]   (~1 min on 2 cores)
"""
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from cmisweep.data.speech import load_speech
from cmisweep.data.speech.synth import synth_corpus
from cmisweep.metrics.vc_speaker import vc_mcas_speaker
from cmisweep.models.dsae import DSAE


def main(steps: int = 1500) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        corpus = synth_corpus(Path(d) / "speech-synth", speakers=16, utterances=3, seed=0, test_fraction=0.5)
        data = load_speech("speech-synth", corpus)
    torch.manual_seed(0)
    model = DSAE(x_dim=201, frames=20, z_dim=8, s_dim=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        e = model.elbo_terms(data.train_x[torch.randint(len(data.train_x), (32,))])
        loss = (e.recon + e.kl_z + e.kl_s).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f} s, final batch -ELBO {loss.item():.1f}")
    collapsed = copy.deepcopy(model)
    with torch.no_grad():
        collapsed.z_head.weight.zero_()
        collapsed.z_head.bias[: model.z_dim].zero_()
    torch.manual_seed(1)
    untrained = DSAE(x_dim=201, frames=20, z_dim=8, s_dim=8, hidden=32)
    for name, m in (("trained", model), ("collapsed z", collapsed), ("untrained", untrained)):
        for seed in (0, 1, 2):
            out = vc_mcas_speaker(m, data, per_speaker=20, seed=seed)
            print(f"{name:12s} seed {seed}: VC-mCAS(speaker) {out['vc_mcas_speaker']:.3f}  real baseline "
                  f"{out['vc_mcas_speaker_real']:.3f}  chance {out['vc_mcas_speaker_chance']:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
