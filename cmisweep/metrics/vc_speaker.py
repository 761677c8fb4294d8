"""Speaker-identity VC-mCAS: the paper's VC-mCAS (App. 7) with the test speakers as the classes
instead of the two genders (docs/design.md section 3).

Why: on the synthesized corpus gender is told from any segment (VC-mCAS 0.99 for every model), so
the gender score cannot rank methods; the paper's TIMIT figures are 0.81-0.88. Telling apart
dozens of voices is as hard as z makes it.

Protocol, per test speaker with two or more utterances: its utterances alternate between donors and
held-out. `per_speaker` conversions take z from a random segment of the speaker's donor utterances
and s from a random segment of another speaker, labelled with the z donor's speaker. A logistic
classifier on time-averaged spectra is trained on the conversions and scored on real segments of
the held-out utterances. A model whose z carries no voice scores near chance (1 / speakers); the
baseline trains the same classifier on as many real donor segments.
"""
from __future__ import annotations

import numpy as np
import torch

from cmisweep.metrics.speaker import _classifier, convert_rows


def _time_avg(x: torch.Tensor) -> np.ndarray:
    return x.float().mean(1).cpu().numpy()


@torch.no_grad()
def vc_mcas_speaker(model, data, per_speaker: int = 10, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """{'vc_mcas_speaker', 'vc_mcas_speaker_real', 'vc_mcas_speaker_chance', 'vc_mcas_speaker_n'};
    {} when fewer than two test speakers have two utterances."""
    rng = np.random.default_rng(seed)
    utt = data.test_utt.cpu().numpy()
    speaker_of_utt = data.utterances["speaker"].to_numpy()
    speakers = speaker_of_utt[utt]
    donor_rows, held_rows, labels = [], [], []
    for k, spk in enumerate(sorted(set(speakers))):
        own = np.unique(utt[speakers == spk])
        if len(own) < 2:
            continue
        donors = np.flatnonzero(np.isin(utt, own[0::2]))
        held = np.flatnonzero(np.isin(utt, own[1::2]))
        donor_rows.append(rng.choice(donors, per_speaker, replace=len(donors) < per_speaker))
        held_rows.append(rng.choice(held, min(per_speaker, len(held)), replace=False))
        labels.append(spk)
    if len(labels) < 2:
        return {}
    z_donor = np.concatenate(donor_rows)
    z_label = np.repeat(np.array(labels), per_speaker)
    held = np.concatenate(held_rows)
    held_label = speakers[held]
    # s from another speaker's segment: the conversion keeps content that is not the label's
    s_donor = np.array([rng.choice(np.flatnonzero(speakers != speakers[i])) for i in z_donor])
    x = data.test_x
    generated = convert_rows(model, x, z_donor, s_donor, batch_size)
    real = _time_avg(x[torch.as_tensor(held, device=x.device)])
    score = _classifier(seed).fit(_time_avg(generated), z_label).score(real, held_label)
    base = _classifier(seed).fit(_time_avg(x[torch.as_tensor(z_donor, device=x.device)]), z_label)
    return {"vc_mcas_speaker": float(score), "vc_mcas_speaker_real": float(base.score(real, held_label)),
            "vc_mcas_speaker_chance": 1.0 / len(labels), "vc_mcas_speaker_n": len(labels)}
