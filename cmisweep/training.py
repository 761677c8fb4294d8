"""The trainer: any model of the SequentialVAE protocol under any regularizer of the interface in
cmisweep.regularizer_api (the paper's methods or a plug-in); it never asks which it has.

Each step: one Adam step of the VAE on the regularizer's loss (-J), then its `aux_steps` Adam
steps of its networks (the paper's critics: 2 steps of Eq. 12 per VAE step, lr 10x the VAE's) on
the same batch's (detached) encodings or a fresh draw.
After every epoch: the validation pass, the best epoch by validation score kept (the paper reports
test values there), and an optional checkpoint that holds everything needed to continue exactly as
an uninterrupted run would: model, critics, optimizers, RNG states, epoch, history, best state.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cmisweep import critic_training
from cmisweep import regularizer as R
from cmisweep.regularizer_api import Plugin, Step
from cmisweep.files import atomic_write
from cmisweep.config import TrainConfig
from cmisweep.device import auto_precision, autocast
from cmisweep.errors import DataError, TrainingDiverged
from cmisweep.metrics.active_units import active_units

CHECKPOINT_FORMAT = 1


def resolve_precision(precision: str, model: nn.Module, device: torch.device) -> str:
    """auto -> the model's measured fast path (its `fast_precision`) where the device has native bf16, else fp32."""
    if precision != "auto":
        return precision
    return auto_precision(getattr(model, "fast_precision", "fp32"), device)


def resolve_channels_last(memory_format: str, model: nn.Module) -> bool:
    if memory_format == "auto":
        return bool(getattr(model, "prefers_channels_last", False))
    return memory_format == "channels_last"


def batches(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield x[i: i + size]


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        reg: Plugin,
        train_x: torch.Tensor,
        val_x: torch.Tensor,
        cfg: TrainConfig,
        *,
        critic_lr: float,
        critic_precision: R.CriticPrecision = "same",
        critic_z: R.CriticZ = "reuse",
        critic_bn: R.CriticBN = "frozen",
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        critics = reg.networks()  # the regularizer's own networks (the paper's critics D_m, D_c)
        self.model, self.critics, self.reg, self.cfg = model.to(self.device), critics.to(self.device), reg, cfg
        self.precision = resolve_precision(cfg.precision, model, self.device)
        self.critic_precision = self.precision if critic_precision == "same" else critic_precision
        self.critic_z, self.critic_bn = critic_z, critic_bn
        self.channels_last = resolve_channels_last(cfg.memory_format, model)
        if self.channels_last:  # 4-D weights only; activations follow the input's layout
            self.model.to(memory_format=torch.channels_last)
            self.critics.to(memory_format=torch.channels_last)
        self.train_x, self.val_x = train_x.to(self.device), val_x.to(self.device)
        torch.manual_seed(seed)  # z and negative noise
        self.data_rng = torch.Generator().manual_seed(seed)  # batch order
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=critic_lr) if len(self.critics) else None
        self.epoch = 0
        self.steps_done = 0
        self.history: list[dict] = []
        self.best: dict | None = None

    # --- one epoch -------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.train_x) // self.cfg.batch_size
        return min(n, self.cfg.steps_per_epoch) if self.cfg.steps_per_epoch else n

    def train_epoch(self) -> dict:
        self.model.train()
        self.critics.train()
        epoch = self.epoch + 1
        perm = torch.randperm(len(self.train_x), generator=self.data_rng).to(self.device)
        bs, n_steps = self.cfg.batch_size, self.steps_per_epoch
        sums: dict[str, torch.Tensor] = {}
        pending: list[torch.Tensor] = []  # per-step losses not yet checked for finiteness
        for step in range(1, n_steps + 1):
            terms, closs = self.train_step(self._layout(self.train_x[perm[(step - 1) * bs: step * bs]]))
            loss = terms["loss"]
            pending.append(loss.detach().reshape(1) if closs is None else torch.stack([loss.detach(), closs]))
            for k, v in [*terms.items(), ("critic_loss", closs)]:
                if v is not None:
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
            if step % self.cfg.check_every == 0 or step == n_steps:
                self._check_finite(pending, epoch, step - len(pending) + 1)
                pending = []
        return {f"train/{k}": float(v) / n_steps for k, v in sums.items()}

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def train_step(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One VAE step and the regularizer's network steps: (the step's logged terms, loss first;
        the last network step's loss or None)."""
        terms, z, s = self.vae_step(x)
        closs = None
        if self.critic_opt is not None:
            for _ in range(self.reg.aux_steps):
                if self.critic_z == "resample":
                    z, s = self.resample(x)
                closs = self.critic_step(z, s, x)
        return terms, closs

    @torch.no_grad()
    def resample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh (z, s) ~ q(z, s | x) for a critic step (critic_z: resample), without folding
        this extra pass into the VAE's BatchNorm statistics."""
        with autocast(self.device, self.precision), _frozen_batchnorm(self.model):
            z = self.model.encode(x).sample()
            return z, self.model.local_features(x, z)

    @contextlib.contextmanager
    def _critic_reading(self):
        """How the VAE step reads the critics: in their precision and BatchNorm mode."""
        with autocast(self.device, self.critic_precision), _batchnorm_mode(self.critics, self.critic_bn):
            yield

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        """fp32 critics take fp32 inputs: the VAE's bf16 s is cast (autocast is off for them)."""
        return t.float() if self.critic_precision == "fp32" else t

    def _objective(self, x: torch.Tensor, terms, step: int, reading=None) -> dict[str, torch.Tensor]:
        """The regularizer's loss on one batch and the terms to log: loss, the ELBO's, its own."""
        view = Step(x, terms, step, self.critics) if reading is None else \
            Step(x, terms, step, self.critics, reading, self._cast)
        loss, own = self.reg.loss(view)
        return {"loss": loss, "recon": terms.recon.float().mean(), "kl_z": terms.kl_z.float().mean(),
                "kl_s": terms.kl_s.float().mean(), **own}

    def vae_step(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One Adam step of the VAE on the regularizer's loss; returns the logged terms and the
        batch's detached (z, s).

        The critics only read here: no gradient to their weights. By default (critic_bn: frozen)
        their BatchNorm layers normalize with the batch's statistics (the function Eq. 12 trains)
        without folding this batch into the running statistics, which the critic steps alone update."""
        self.critics.requires_grad_(False)
        try:
            self.steps_done += 1
            with autocast(self.device, self.precision):
                terms = self.model.elbo_terms(x)
                logged = self._objective(x, terms, self.steps_done, self._critic_reading)
            self.opt.zero_grad(set_to_none=True)
            logged["loss"].backward()
            self.opt.step()
        finally:
            self.critics.requires_grad_(True)
        return logged, terms.z.detach(), terms.s.detach()

    def critic_step(self, z: torch.Tensor, s: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """One Adam step of the regularizer's networks on its aux_loss at encodings (z, s) of x
        (the paper's critics: Eq. 12 with fresh negatives)."""
        z, s = self._cast(z), self._cast(s)
        with autocast(self.device, self.critic_precision):
            closs = self.reg.aux_loss(self.critics, z, s, x)
        return critic_training.step(self.critic_opt, closs)

    def _check_finite(self, pending: list[torch.Tensor], epoch: int, first_step: int) -> None:
        """Raise TrainingDiverged at the first step whose VAE or critic loss is non-finite or
        beyond train.max_loss (one host sync per check). A loss past max_loss counts as
        non-finite: at 1e20 nats float32 steps carry no information, and such a run (a learning
        rate of 10 gets there in two steps) would otherwise burn its whole budget."""
        if not pending:
            return
        bad_value = torch.stack([~torch.isfinite(p).all() for p in pending])
        too_big = torch.stack([(p.abs() > self.cfg.max_loss).any() for p in pending])
        bad = bad_value | too_big
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            names = ("VAE loss", "critic loss")
            detail = ", ".join(f"{n} = {float(v):.4g}" for n, v in zip(names, pending[i]))
            if not bool(bad_value[i]):
                detail += f" > train.max_loss = {self.cfg.max_loss:g}, counted as non-finite"
            raise TrainingDiverged(epoch, first_step + i, detail)

    @torch.no_grad()
    def validate(self, x: torch.Tensor | None = None, precision: str | None = None) -> dict:
        """Means over the validation set (or x) of the ELBO's terms, M, C, the objective J and the
        ELBO, and the number of active units of z (Burda et al. 2016, Sect. 5.2) over x; in the
        training precision unless told (final metrics are computed in fp32)."""
        self.model.eval()
        self.critics.eval()
        x = self.val_x if x is None else x
        sums: dict[str, float] = {}
        z_means: list[torch.Tensor] = []  # the pass's own q(z|x) means: no second encoding
        for xb in batches(x, self.cfg.eval_batch_size):
            with autocast(self.device, precision or self.precision):
                xb = self._layout(xb)
                terms = self.model.elbo_terms(xb)
                logged = self._objective(xb, terms, 0)
            z_means.append(terms.z_mean)
            logged["loss"] = logged.pop("loss")  # last, as J is derived from it below
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(xb)
        out = {k: v / len(x) for k, v in sums.items()}
        out["objective"] = -out.pop("loss")
        out["elbo"] = -(out["recon"] + out["kl_z"] + out["kl_s"])
        out["active_units"] = active_units(torch.cat(z_means))
        return out

    def run_epoch(self) -> dict:
        t0 = time.perf_counter()
        metrics = self.train_epoch()
        metrics["time/train_s"] = time.perf_counter() - t0
        val = self.validate()
        if not all(math.isfinite(v) for v in val.values()):
            raise TrainingDiverged(self.epoch + 1, self.steps_per_epoch, "in the validation pass")
        metrics.update({f"val/{k}": v for k, v in val.items()})
        metrics["time/epoch_s"] = time.perf_counter() - t0
        self.epoch += 1
        metrics["epoch"] = self.epoch
        score = val[self.cfg.select_by]
        if self.best is None or score > self.best["value"]:
            self.best = {"epoch": self.epoch, "value": score, "model": _cpu_copy(self.model.state_dict()),
                         "critics": _cpu_copy(self.critics.state_dict())}
        metrics["best_epoch"] = self.best["epoch"]
        self.history.append(metrics)
        return metrics

    def fit(self, epochs: int, on_epoch: Callable[[dict, "Trainer"], None] | None = None,
            checkpoint: str | Path | None = None) -> list[dict]:
        """Train until `epochs` epochs are done (counting epochs restored from a checkpoint)."""
        while self.epoch < epochs:
            metrics = self.run_epoch()
            if checkpoint is not None:
                self.save(checkpoint)
            if on_epoch is not None:
                on_epoch(metrics, self)
        return self.history

    def load_best(self) -> None:
        """Put the weights of the best validation epoch back (the state the paper reports)."""
        if self.best is not None:
            self.model.load_state_dict(self.best["model"])
            self.critics.load_state_dict(self.best["critics"])

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT, "epoch": self.epoch, "history": self.history, "best": self.best,
            "model": self.model.state_dict(), "critics": self.critics.state_dict(),
            "regularizer": self.reg.state_dict(), "steps_done": self.steps_done,
            "opt": self.opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict() if self.critic_opt is not None else None,
            "rng": rng,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        self.model.load_state_dict(state["model"])
        self.critics.load_state_dict(state["critics"])
        self.opt.load_state_dict(state["opt"])
        if self.critic_opt is not None:
            self.critic_opt.load_state_dict(state["critic_opt"])
        torch.set_rng_state(state["rng"]["torch"])
        self.data_rng.set_state(state["rng"]["data"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.reg.load_state_dict(state.get("regularizer", {}))
        self.steps_done = state.get("steps_done", state["epoch"] * self.steps_per_epoch)
        self.epoch, self.history, self.best = state["epoch"], list(state["history"]), state["best"]

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        atomic_write(path, lambda tmp: torch.save(self.state_dict(), tmp))

    def restore(self, path: str | Path) -> None:
        state = read_checkpoint(path, self.device)
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:  # another model's or optimizer's state
            raise DataError(f"{path}: a checkpoint of another model or config; expected one that this config "
                            f"wrote ({_first_line(e)})") from None


CHECKPOINT_KEYS = ("format", "epoch", "history", "best", "model", "critics", "opt", "critic_opt", "rng")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A trainer checkpoint's state, or a DataError naming the file: missing, truncated, not a torch
    file, or a torch file that is not a cmisweep checkpoint. The file itself is left as it is."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint file here")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, pickle's errors, EOFError... for a damaged file
        raise DataError(f"{path}: damaged or truncated checkpoint, not readable by torch.load ({_first_line(e)}); "
                        "expected a checkpoint.pt written by cmisweep train") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise DataError(f"{path}: not a cmisweep checkpoint (format {found}; expected format {CHECKPOINT_FORMAT})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise DataError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    return state


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message: torch's and MLflow's run to paragraphs."""
    text = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def _frozen_batchnorm(module: nn.Module):
    """BatchNorm layers in training mode keep using batch statistics but stop updating their
    running statistics (with track_running_stats off, a training-mode BatchNorm passes no running
    buffers to batch_norm); eval-mode layers are untouched."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def _batchnorm_mode(critics: nn.Module, mode: R.CriticBN):
    """frozen: batch statistics, running statistics untouched; train: plain training mode (the batch
    folds into the running statistics); eval: the running statistics normalize."""
    if mode == "frozen":
        return _frozen_batchnorm(critics)
    if mode == "eval":
        return _eval_mode(critics)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
