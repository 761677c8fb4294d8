"""A trial's best-epoch model kept compactly: an fp16 state dict plus the resolved config
(docs/design.md section 7). A sweep keeps one per evaluated trial under results/<sweep>/models/,
and a study commits them, so that `cmisweep evaluate` can re-evaluate any trial without training it
again, and `cmisweep.load("<sweep>/models/<trial>.pt")` gives the model back.

The evaluated model is the kept one: a trial rounds its best-epoch weights to fp16 (round_to_kept)
before its evaluation, so that re-evaluating the kept file reproduces the numbers recorded at
training bit for bit on the same machine. The rounding moves a weight by at most 2^-11 of itself;
a tensor that fp16 cannot hold (a value beyond its range) stays fp32.
"""
from __future__ import annotations

from pathlib import Path

import torch

from cmisweep import migrate
from cmisweep.config import TrialConfig
from cmisweep.errors import DataError
from cmisweep.files import atomic_write

FORMAT = 1
SUFFIX = ".pt"


def _fp16(t: torch.Tensor) -> torch.Tensor | None:
    """t rounded to fp16, or None when fp16 cannot hold it."""
    if not t.is_floating_point():
        return None
    h = t.detach().to(torch.float16)
    return h if bool(torch.isfinite(h).all()) == bool(torch.isfinite(t).all()) else None


@torch.no_grad()
def round_to_kept(model: torch.nn.Module) -> torch.nn.Module:
    """Round the model's floating weights and buffers to the values the kept file stores, in place."""
    for t in [*model.parameters(), *model.buffers()]:
        h = _fp16(t)
        if h is not None:
            t.copy_(h.to(t.dtype))
    return model


def save_kept(model: torch.nn.Module, cfg: TrialConfig, data, path: str | Path) -> Path:
    """Write the model's state (fp16 where it fits), its config, its input shape and, for speech,
    its training split's feature normalization."""
    state = {}
    for k, t in model.state_dict().items():
        h = _fp16(t)
        state[k] = (h if h is not None else t.detach()).cpu().contiguous().clone()
    mean, std = getattr(data, "feature_mean", None), getattr(data, "feature_std", None)
    record = {"format": FORMAT, "config": cfg.model_dump(), "input_shape": list(data.train_x.shape[1:]),
              "state": state,
              "normalization": None if mean is None else {"mean": mean.detach().float().cpu(),
                                                          "std": std.detach().float().cpu()}}
    return atomic_write(path, lambda tmp: torch.save(record, tmp))


def load_kept(path: str | Path | bytes) -> tuple[torch.nn.Module, TrialConfig]:
    """(model in eval mode on the CPU, fp32, its TrialConfig) from a kept file (or its bytes)."""
    import io

    from cmisweep.models import build_model

    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    path = "<kept model bytes>" if isinstance(path, bytes) else Path(path)
    try:
        record = torch.load(source, map_location="cpu", weights_only=True)
        fmt = record.get("format") if isinstance(record, dict) else None
    except Exception as e:  # noqa: BLE001 - a damaged file raises anything from torch's unpickler
        raise DataError(f"{path}: unreadable kept model ({type(e).__name__}); expected a file cmisweep wrote") from None
    if fmt != FORMAT:
        raise DataError(f"{path}: not a kept model of format {FORMAT} (found {fmt!r})")
    try:
        cfg = TrialConfig.model_validate(migrate.current(record["config"], "trial"))
    except ValueError as e:
        raise DataError(f"{path}: the kept model's config is not valid ({str(e).splitlines()[0]})") from None
    model = build_model(cfg.model, tuple(record["input_shape"]))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in record["state"].items()})
    except RuntimeError as e:
        raise DataError(f"{path}: the weights do not fit the model its config builds "
                        f"({str(e).splitlines()[0][:160]})") from None
    norm = record.get("normalization")
    if norm is not None:
        model.register_buffer("feature_mean", norm["mean"])
        model.register_buffer("feature_std", norm["std"])
    return model.eval(), cfg
