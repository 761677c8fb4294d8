"""AoLR / AoSVM: accuracy of a linear / RBF-SVM probe on z (docs/design.md section 3).

z = the mean of q(z|x) for a balanced set of training images (100 per class by default); the
probe is scored on the whole test set.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def balanced_indices(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """`per_class` indices of each class, seeded; fewer where a class has fewer examples."""
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    picks = []
    for c in torch.unique(y):
        idx = (y == c).nonzero().squeeze(1)
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks)


@torch.no_grad()
def encode_means(model, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    model.eval()
    return torch.cat([model.encode(x[i: i + batch_size]).mean.float().cpu() for i in range(0, len(x), batch_size)]).numpy()


def classifiers(seed: int = 0) -> dict:
    """The two probes: logistic regression and an RBF-SVM, on standardized features."""
    return {
        "lr": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)),
        "svm": make_pipeline(StandardScaler(), SVC(kernel="rbf", random_state=seed)),
    }


def fit_score(features: np.ndarray, labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray,
              seed: int = 0) -> dict[str, float]:
    out = {}
    for name, clf in classifiers(seed).items():
        clf.fit(features, labels)
        out[name] = float((clf.predict(test_features) == test_labels).mean())
    return out


def probe_accuracy(model, train_x, train_y, test_x, test_y, per_class: int = 100, seed: int = 0,
                   batch_size: int = 500) -> dict[str, float]:
    """{'aolr': ..., 'aosvm': ...}."""
    idx = balanced_indices(train_y, per_class, seed).to(train_x.device)
    scores = fit_score(encode_means(model, train_x[idx], batch_size), train_y[idx].cpu().numpy(),
                       encode_means(model, test_x, batch_size), test_y.cpu().numpy(), seed)
    return {"aolr": scores["lr"], "aosvm": scores["svm"]}


def epoch_aolr(model, val_x, val_y, per_class: int = 20, seed: int = 0, batch_size: int = 500) -> float:
    """AoLR at an epoch, for MO-ASHA's rungs (docs/design.md 6.2): a logistic probe on z's means of
    `per_class` validation images per class, scored on the rest of the validation set. The images
    are fixed by the seed (its own generator: the training's random stream is not touched)."""
    idx = balanced_indices(val_y, per_class, seed).to(val_x.device)
    rest = torch.ones(len(val_x), dtype=torch.bool, device=val_x.device)
    rest[idx] = False
    clf = classifiers(seed)["lr"]
    clf.fit(encode_means(model, val_x[idx], batch_size), val_y[idx].cpu().numpy())
    return float((clf.predict(encode_means(model, val_x[rest], batch_size)) == val_y[rest].cpu().numpy()).mean())

