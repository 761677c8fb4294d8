"""Speaker metrics of a DSAE (DESIGN.md section 3).

EER(z), EER(s): speaker verification over all pairs of test utterances (their speakers are unseen
in training), scored by the cosine similarity of utterance embeddings: the encoder means (z, and s
averaged over time) of an utterance's segments, averaged. A global feature that holds the speaker
gives a low EER(z); s should hold the content, so EER(s) should stay near chance (0.5).

VC-mCAS: pair each test utterance with one of the opposite gender, decode its s with the other's
z (voice conversion), train a logistic classifier on the time-averaged converted spectra labelled
with the z-donor's gender, and score it on real test speech. High when z carries the voice and the
decoder uses it; the same classifier trained on real speech is the baseline.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def eer(scores: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate: where the false-accept rate equals the false-reject rate (ROC from
    scikit-learn, interpolated between the two thresholds that bracket the crossing)."""
    same = np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise ValueError("EER needs both same-speaker and different-speaker pairs")
    fpr, tpr, _ = roc_curve(same, scores)
    fnr = 1.0 - tpr
    i = int(np.nonzero(fnr <= fpr)[0][0])  # the first threshold where false rejects fall below accepts
    if i == 0:
        return float(fpr[0])
    # linear interpolation of fpr - fnr between points i-1 and i
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


@torch.no_grad()
def utterance_embeddings(model, x: torch.Tensor, utt: torch.Tensor, batch_size: int = 256):
    """(utterance rows, z embeddings (U, z_dim), s embeddings (U, s_dim)) from segment encoder means."""
    model.eval()
    zs, ss = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size]
        z = model.encode(xb).mean
        zs.append(z.float().cpu())
        ss.append(model.local_features(xb, z, sample=False).float().mean(1).cpu())
    z, s = torch.cat(zs), torch.cat(ss)
    rows, inverse = torch.unique(utt.cpu(), return_inverse=True)
    count = torch.zeros(len(rows)).index_add_(0, inverse, torch.ones(len(utt)))
    pool = lambda e: torch.zeros(len(rows), e.shape[1]).index_add_(0, inverse, e) / count[:, None]  # noqa: E731
    return rows.numpy(), pool(z).numpy(), pool(s).numpy()


def pair_scores(emb: np.ndarray, speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-speaker flag of every pair i < j."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    i, j = np.triu_indices(len(e), k=1)
    return sim[i, j], speakers[i] == speakers[j]


def speaker_eer(model, data, batch_size: int = 256) -> dict[str, float]:
    rows, ez, es = utterance_embeddings(model, data.test_x, data.test_utt, batch_size)
    speakers = data.utterances["speaker"].to_numpy()[rows]
    return {"eer_z": eer(*pair_scores(ez, speakers)), "eer_s": eer(*pair_scores(es, speakers))}


def _time_average(x: torch.Tensor, utt: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance, the spectrum averaged over all frames of all its segments."""
    rows, inverse = torch.unique(utt.cpu(), return_inverse=True)
    frames = x.float().mean(1).cpu()
    count = torch.zeros(len(rows)).index_add_(0, inverse, torch.ones(len(utt)))
    return rows.numpy(), (torch.zeros(len(rows), frames.shape[1]).index_add_(0, inverse, frames) / count[:, None]).numpy()


def _classifier(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


@torch.no_grad()
def vc_mcas(model, data, pairs: int = 200, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """{'vc_mcas', 'vc_mcas_real'} or {} when the test speech lacks two genders."""
    utts = data.utterances
    gender = utts["gender"].to_numpy()
    test_rows = np.unique(data.test_utt.cpu().numpy())
    test_rows = test_rows[[g in ("F", "M") for g in gender[test_rows]]]
    by = {g: test_rows[gender[test_rows] == g] for g in ("F", "M")}
    if min(len(v) for v in by.values()) == 0:
        return {}
    rng = np.random.default_rng(seed)
    model.eval()
    utt = data.test_utt.cpu()
    z_rows, ez, _ = utterance_embeddings(model, data.test_x, data.test_utt, batch_size)
    z_of = dict(zip(z_rows.tolist(), ez))
    feats, labels = [], []
    for k in range(pairs):
        g = "F" if k % 2 == 0 else "M"
        src = int(rng.choice(by[g]))
        donor = int(rng.choice(by["M" if g == "F" else "F"]))
        seg = (utt == src).nonzero().squeeze(1).to(data.test_x.device)
        z_t = torch.as_tensor(z_of[donor], device=data.test_x.device).expand(len(seg), -1)
        converted = model.convert(data.test_x[seg], z_t).float()
        feats.append(converted.mean((0, 1)).cpu().numpy())
        labels.append(gender[donor])
    real_rows, real = _time_average(data.test_x, data.test_utt)
    keep = np.isin(real_rows, test_rows)
    real, real_gender = real[keep], gender[real_rows[keep]]
    clf = _classifier(seed).fit(np.stack(feats), np.array(labels))
    out = {"vc_mcas": float((clf.predict(real) == real_gender).mean())}
    tr_rows, tr = _time_average(data.train_x, data.train_utt)
    tr_gender = gender[tr_rows]
    ok = np.isin(tr_gender, ["F", "M"])
    if len(set(tr_gender[ok])) == 2:
        base = _classifier(seed).fit(tr[ok], tr_gender[ok])
        out["vc_mcas_real"] = float((base.predict(real) == real_gender).mean())
    return out
