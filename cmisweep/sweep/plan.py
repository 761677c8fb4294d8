"""`cmisweep run SPACE --dry-run`: the trial plan and what it would cost on this machine.

The cost is epochs x trials x steps per epoch x a step time measured here (a few real training
steps of each regularizer's model, with the trial's threads), plus the per-epoch validation and
the final evaluation, and the wall time at the space's concurrency. Nothing is started or written.
"""
from __future__ import annotations

import math
import time

import torch

from cmisweep.sweep import search
from cmisweep.sweep.space import SearchSpace, corner_points, grid_points, point_name, trial_config


def measure_step(cfg, steps: int = 2) -> float:
    """Median seconds of one training step (VAE + critic steps) of a trial config, on random data."""
    from cmisweep.models import build_model
    from cmisweep.device import resolve_device
    from cmisweep.regularizer_api import build_regularizer
    from cmisweep.training import Trainer

    from cmisweep.data import example_shape, random_batch

    torch.manual_seed(0)
    model = build_model(cfg.model, example_shape(cfg.data))
    reg = build_regularizer(cfg.regularizer, model)
    bs = cfg.train.batch_size
    x = random_batch(cfg.data, bs * (steps + 1))
    trainer = Trainer(model, reg, x, x[:bs], cfg.train, **cfg.critic_training(reg.aux_lr),
                      device=resolve_device(cfg.train.device))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        trainer.train_step(x[i * bs: (i + 1) * bs].to(trainer.device))
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def measure_eval(cfg) -> dict[str, float]:
    """Seconds of the final evaluation's costly metric groups ({"ihat": s, "mcas": s}; the others
    take seconds), extrapolated from the pieces a trial runs, at a smaller size. I-hat trained until
    converged is priced at its least: settled at the first doubling (IhatConfig.doublings). I-hat:
    ihat_metrics itself (the critic ensembles, in the precision its 'auto' resolves to on the
    trial's device, and the encodings it caches) at two step counts, which parts a critic step from
    the encoding of the images; each part scales about linearly. mCAS: the samples of 100 images."""
    from types import SimpleNamespace

    from cmisweep.data import example_shape, random_batch
    from cmisweep.metrics.mutual_info import ihat_metrics
    from cmisweep.models import build_model
    from cmisweep.device import resolve_device

    ev = cfg.evaluation
    if not ev.enabled:
        return {}
    device = resolve_device(cfg.train.device)
    torch.manual_seed(0)
    model = build_model(cfg.model, example_shape(cfg.data)).to(device).eval()
    total: dict[str, float] = {}
    if ev.ihat is not None:
        ic = ev.ihat
        n = 2 * ic.batch_size  # images encoded to train the critics, and as many read out
        data = SimpleNamespace(val_x=random_batch(cfg.data, n).to(device), test_x=random_batch(cfg.data, n).to(device))

        def seconds(steps: int) -> float:  # one fixed-step run: the doubling rule's unit
            small = ev.model_copy(update={"ihat": ic.model_copy(update={"steps": steps, "n_train": n, "n_eval": n,
                                                                         "converge": False})})
            t0 = time.perf_counter()
            ihat_metrics(model, data, small)
            return time.perf_counter() - t0

        seconds(1)  # the first call's one-off costs (kernel choice), which a trial pays once
        short, long = seconds(2), seconds(6)
        per_step = max(0.0, (long - short) / 4)
        per_image = max(0.0, short - 2 * per_step) / (2 * n)
        images = min(ic.n_train, cfg.data.val_size or ic.n_train) + min(ic.n_eval, cfg.data.test_size or ic.n_eval)
        runs = ic.doublings()[:2] if ic.converge else [ic.steps]  # converged: at least two runs
        total["ihat"] = per_step * sum(runs) + per_image * images * len(runs)
    if cfg.data.modality == "image" and ev.mcas:
        t0 = time.perf_counter()
        model.generate(torch.randn(100, model.z_dim, device=device))
        n = 10 * ev.mcas_real_per_class * ev.mcas_samples
        total["mcas"] = (time.perf_counter() - t0) * n / 100
    return total


def steps_per_epoch(cfg) -> int:
    n = cfg.data.train_size or (48000 if cfg.data.modality == "image" else 20000)  # speech: ~a small TIMIT
    s = n // cfg.train.batch_size
    return min(s, cfg.train.steps_per_epoch) if cfg.train.steps_per_epoch else s


def step_times(space: SearchSpace, points: list[dict]) -> dict[str, float]:
    """Seconds of one training step per preset, measured: the paper's presets with the same
    critics cost the same; a plug-in is measured itself, and one that cannot take a step is a
    one-line error (its trials would fail the same way)."""
    from cmisweep.errors import CmisweepError

    step_by_preset: dict[str, float] = {}
    by_critics: dict[tuple, float] = {}
    for p in points:
        if p["preset"] in step_by_preset:
            continue
        cfg = trial_config(space, p)
        reg = cfg.regularizer
        key = (reg.objective.uses_m, reg.objective.uses_c) if reg.plugin is None else (reg.plugin,)
        if key not in by_critics:
            try:
                by_critics[key] = measure_step(cfg)
            except Exception as e:  # noqa: BLE001 - a plug-in's own code
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                raise CmisweepError(f"--dry-run: a training step of {p['preset']} failed ({type(e).__name__}: "
                                    f"{why}); its trials would fail the same way") from None
        step_by_preset[p["preset"]] = by_critics[key]
    return step_by_preset


def plan(space: SearchSpace, measure: bool = True) -> str:
    points = grid_points(space) if space.algorithm.kind == "grid" else corner_points(space)
    n = search.n_trials(space)
    lines = [f"sweep {space.name}: {n} trials ({space.algorithm.kind}"
             + (f", {space.algorithm.num_samples} points x {len(space.search.seeds)} seeds" if space.algorithm.kind != "grid"
                else "") + ")"]
    if space.algorithm.kind == "grid":
        lines += [f"  {point_name(p)}" for p in points[:50]]
        if len(points) > 50:
            lines.append(f"  ... and {len(points) - 50} more")
    else:
        lines.append("  sampled: " + ", ".join(f"{k} in [{r.low:g}, {r.high:g}]{' (log)' if r.log else ''}"
                                              for k, r in space.search.ranges().items()))
    lines.append(decidable(space))
    if not measure:
        return "\n".join(lines)
    torch.set_num_threads(max(1, int(space.resources.cpu)))
    step_by_preset = step_times(space, points)
    cfg0 = trial_config(space, points[0])
    by_group = measure_eval(cfg0)
    deferred = set(cfg0.evaluation.defer)
    eval_s = sum(v for g, v in by_group.items() if g not in deferred)
    later_s = sum(v for g, v in by_group.items() if g in deferred)
    total = 0.0
    for p in (points if space.algorithm.kind == "grid" else points[:1] * n):
        cfg = trial_config(space, p)
        epoch = steps_per_epoch(cfg) * step_by_preset[p["preset"]]
        # validation: a forward pass (about a third of a training step) over the validation set
        val_n = cfg.data.val_size or 12000
        epoch *= 1 + val_n / max(1, steps_per_epoch(cfg) * cfg.train.batch_size) / 3
        total += cfg.train.epochs * epoch + eval_s
    slots = max(1, min(space.concurrency or n, math.floor(_cpus() / space.resources.cpu)))
    wall = total / slots
    lines.append("measured step time here: " + ", ".join(f"{k} {v:.3f} s" for k, v in step_by_preset.items())
                 + f" ({torch.get_num_threads()} threads); evaluation at training ~{_human(eval_s)} per trial"
                 + "".join(f" ({g} {_human(v)})" for g, v in by_group.items() if g not in deferred))
    lines.append(f"estimate on this machine: {_human(total)} of trial time, ~{_human(wall)} wall "
                 f"with {slots} trial(s) at a time")
    if deferred:
        lines.append(f"deferred ({', '.join(sorted(deferred))}): ~{_human(later_s)} per trial later; "
                     f"`cmisweep evaluate --trials all`: ~{_human(later_s * n / slots)} wall for {n} trials "
                     f"(--trials claims: the claims' cells only)")
    ic = cfg0.evaluation.ihat
    if "ihat" in by_group and ic.converge:
        runs = ic.doublings()
        lines.append(f"I-hat until converged is priced at its least (settled at the first doubling, "
                     f"{' + '.join(map(str, runs[:2]))} critic steps); critics that run to the cap "
                     f"({runs[-1]}) take up to {sum(runs) / sum(runs[:2]):.0f}x that")
    if wall > 24 * 3600:
        lines.append(f"this space would take {wall / 86400:.1f} days here: run it on a GPU cluster "
                     "(ray up cluster/gpu.yaml), or reduce epochs / train_size / the grid")
    if space.resources.gpu > 0 and not torch.cuda.is_available():
        lines.append(f"note: the space asks {space.resources.gpu:g} GPU per trial and this machine has none")
    return "\n".join(lines)


def decidable(space: SearchSpace) -> str:
    """What the declared family can decide with the space's seeds (docs/design.md 5.2), before a
    trial runs: the smallest p of the sign-flip test against Holm's first threshold."""
    from cmisweep.reports.inference import seeds_floor, smallest_p

    fam = space.analysis.family
    n, alpha = len(space.search.seeds), space.analysis.alpha
    if not fam:
        return (f"analysis: no family declared: the claims measured will be judged post hoc; {n} seeds reach "
                f"p {smallest_p(n):.3g} at best")
    m = len(fam)
    floor = seeds_floor(alpha / m)
    verdict = "can be decided" if n >= floor else f"undecidable at n = {n} whatever the data"
    return (f"analysis: {m} declared claims, Holm's first step needs p < {alpha / m:.3g}; {n} seeds reach "
            f"p {smallest_p(n):.3g} at best: {verdict} (the floor is {floor} seeds)")


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
