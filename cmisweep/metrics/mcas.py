"""mCAS: classification accuracy score of a classifier trained on generated images (docs/design.md section 3).

100 real training images (10 per class) -> z = mean of q(z|x) -> 10 decoder samples each -> 1000
generated images carrying the source labels -> logistic regression / RBF-SVM on pixels ->
accuracy on the real test set. The baseline trains the same classifiers on the 100 real images:
mCAS above it means the samples of z carry class information beyond the images themselves.
"""
from __future__ import annotations

import torch

from cmisweep.metrics.probes import balanced_indices, fit_score


def _flat(x: torch.Tensor):
    return x.reshape(len(x), -1).float().cpu().numpy()


@torch.no_grad()
def mcas(model, train_x, train_y, test_x, test_y, real_per_class: int = 10, samples: int = 10,
         seed: int = 0) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Returns (scores, the real images, their samples (real * samples, ...), adjacent per image)."""
    model.eval()
    idx = balanced_indices(train_y, real_per_class, seed).to(train_x.device)
    real, labels = train_x[idx], train_y[idx]
    z = model.encode(real).mean
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(real) * samples, *real.shape[1:], generator=g).to(real.device)
    fake = model.generate(z, samples, noise=noise)
    fake_labels = labels.repeat_interleave(samples)
    test_np, test_y_np = _flat(test_x), test_y.cpu().numpy()
    fake_np, real_np = _flat(fake), _flat(real)
    gen = fit_score(fake_np, fake_labels.cpu().numpy(), test_np, test_y_np, seed)
    base = fit_score(real_np, labels.cpu().numpy(), test_np, test_y_np, seed)
    scores = {"mcas": gen["lr"], "mcas_svm": gen["svm"], "mcas_real": base["lr"], "mcas_real_svm": base["svm"],
              # what the classifiers were fitted on (the paper: 100 real images, 1000 samples)
              "mcas_n_real": len(real_np), "mcas_n_generated": len(fake_np), "mcas_n_test": len(test_np)}
    return scores, real, fake
