"""Speaker metrics of a DSAE (docs/design.md section 3).

EER(z), EER(s): speaker verification over all pairs of test utterances (their speakers are unseen
in training), scored by the cosine similarity of utterance embeddings: the encoder means (z, and s
averaged over time) of an utterance's segments, averaged. A global feature that holds the speaker
gives a low EER(z); s should hold the content, so EER(s) should stay near chance (0.5).

VC-mCAS (App. 7 of the paper): take 500 real test segments, 250 female and 250 male; pair them
into 250 random opposite-gender pairs and convert each pair both ways (s from one, z from the other),
500 generated segments labelled with their z donor's gender; train a logistic classifier on the
time-averaged generated spectra and score its accuracy on the real segments' time-averaged spectra
with their true genders. High when z carries the voice and the decoder uses it; the same classifier
trained on real training segments is the baseline (vc_mcas_real). The protocol "utterance" keeps an
earlier variant: whole test utterances, each pair converted one way.
"""
from __future__ import annotations

from dataclasses import dataclass

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


GENDERS = ("F", "M")


@dataclass
class VCSamples:
    """What VC-mCAS is computed from; indices are rows of data.test_x."""

    real: np.ndarray  # the real test segments scored on, half female, half male
    real_gender: np.ndarray
    s_donor: np.ndarray  # per generated segment: the segment whose s (content) it keeps
    z_donor: np.ndarray  # ... and the segment whose z (voice) it takes
    label: np.ndarray  # the z donor's gender
    generated: torch.Tensor  # (2 x pairs, T, D) the conversions

    @property
    def n_pairs(self) -> int:
        return len(self.label) // 2


def _segment_genders(data, split: str) -> np.ndarray:
    gender = data.utterances["gender"].to_numpy()
    return gender[getattr(data, f"{split}_utt").cpu().numpy()]


def _balanced_segments(genders: np.ndarray, per_gender: int, rng) -> dict[str, np.ndarray] | None:
    """per_gender random segments of each gender (fewer where the split has fewer, the same number
    for both); None when a gender is missing."""
    by = {g: np.flatnonzero(genders == g) for g in GENDERS}
    n = min(per_gender, *(len(v) for v in by.values()))
    if n == 0:
        return None
    return {g: rng.choice(by[g], n, replace=False) for g in GENDERS}


@torch.no_grad()
def vc_samples(model, data, segments: int = 500, pairs: int = 250, seed: int = 0,
               batch_size: int = 256) -> VCSamples | None:
    """The real and generated segments of App. 7 of the paper; None without both genders in test."""
    gender = _segment_genders(data, "test")
    chosen = _balanced_segments(gender, segments // 2, np.random.default_rng(seed))
    if chosen is None:
        return None
    real = np.concatenate([chosen["F"], chosen["M"]])
    n = min(pairs, len(chosen["F"]))
    f, m = chosen["F"][:n], chosen["M"][:n]  # rng.choice already shuffled: random pairs
    # each pair both ways: the female's z with the male's s, then the male's z with the female's s
    z_donor, s_donor = np.concatenate([f, m]), np.concatenate([m, f])
    generated = convert_rows(model, data.test_x, z_donor, s_donor, batch_size)
    return VCSamples(real, gender[real], s_donor, z_donor, gender[z_donor], generated)


@torch.no_grad()
def convert_rows(model, x: torch.Tensor, z_donor: np.ndarray, s_donor: np.ndarray, batch_size: int) -> torch.Tensor:
    """x[s_donor[i]] decoded with the posterior mean z of x[z_donor[i]], for every i, on the CPU."""
    model.eval()
    out = []
    for i in range(0, len(z_donor), batch_size):
        zi = torch.as_tensor(z_donor[i: i + batch_size], device=x.device)
        si = torch.as_tensor(s_donor[i: i + batch_size], device=x.device)
        out.append(model.convert(x[si], model.encode(x[zi]).mean).float().cpu())
    return torch.cat(out)


def gender_accuracy(train_x: torch.Tensor, train_gender: np.ndarray, test_x: torch.Tensor, test_gender: np.ndarray,
                    seed: int = 0) -> float:
    """Accuracy on real segments test_x (N, T, D) of a logistic classifier fit on segments train_x,
    both read as their time-averaged spectra (N, D) (App. 7 of the paper)."""
    time_avg = lambda x: x.float().mean(1).cpu().numpy()  # noqa: E731
    clf = _classifier(seed).fit(time_avg(train_x), train_gender)
    return float((clf.predict(time_avg(test_x)) == test_gender).mean())


@torch.no_grad()
def vc_mcas(model, data, pairs: int = 250, seed: int = 0, batch_size: int = 256, protocol: str = "paper",
            segments: int = 500) -> dict[str, float]:
    """{'vc_mcas', 'vc_mcas_real', and for the paper's protocol 'vc_mcas_n_real', 'vc_mcas_n_pairs'
    (the counts used: fewer than asked when the test split is small)}; {} when the test speech
    lacks two genders. Accuracies are fractions in [0, 1]."""
    if protocol == "utterance":
        return _vc_mcas_utterance(model, data, pairs, seed, batch_size)
    if protocol != "paper":
        raise ValueError(f"unknown VC-mCAS protocol {protocol!r}; expected paper or utterance")
    vc = vc_samples(model, data, segments, pairs, seed, batch_size)
    if vc is None:
        return {}
    real = data.test_x[torch.as_tensor(vc.real, device=data.test_x.device)]
    out = {"vc_mcas": gender_accuracy(vc.generated, vc.label, real, vc.real_gender, seed),
           "vc_mcas_n_real": len(vc.real), "vc_mcas_n_pairs": vc.n_pairs}
    train_gender = _segment_genders(data, "train")
    train = _balanced_segments(train_gender, len(vc.real) // 2, np.random.default_rng(seed + 1))
    if train is not None:  # the baseline: as many real training segments in place of the conversions
        rows = np.concatenate([train["F"], train["M"]])
        x = data.train_x[torch.as_tensor(rows, device=data.train_x.device)]
        out["vc_mcas_real"] = gender_accuracy(x, train_gender[rows], real, vc.real_gender, seed)
    return out


@torch.no_grad()
def _vc_mcas_utterance(model, data, pairs: int, seed: int, batch_size: int) -> dict[str, float]:
    """The earlier variant: `pairs` test utterances, each converted one way to an opposite-gender
    donor's utterance-mean z, scored on every real test utterance."""
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
