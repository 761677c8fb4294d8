"""The one Ray Tune trainable: any model, any regularizer, from a search space and a point.

Per epoch it reports the metrics with a checkpoint (model, critics, optimizers, RNG states), so a
restarted trial continues exactly where its last checkpoint left it. At the end it evaluates the
best epoch and reports the final metrics as final/<name>, with a last checkpoint that also holds
the artifacts (resolved config, sample grid, training curves) for the tracker to log.
A trial whose loss turns non-finite reports status FAILED with the reason and is not retried:
training it again would diverge again. Under ASHA with `evaluate_stopped`, a trial that the
scheduler asked to stop (cmisweep.sweep.early_stop) ends training there, is evaluated, and reports
status STOPPED with the rung in `cmisweep/stopped_at`.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from cmisweep.errors import TrainingDiverged
from cmisweep.status import TrialStatus
from cmisweep.sweep.search import resolve
from cmisweep.sweep.space import SearchSpace, epoch_probe
from cmisweep.kept_model import save_kept
from cmisweep.trial import build_trainer, finish
from cmisweep.device import cpu_bf16_features, cpu_model
from cmisweep.vocabulary import is_number

CHECKPOINT_FILE = "checkpoint.pt"
KEPT_FILE = "model.pt"  # in the last checkpoint: the best-epoch model, kept compactly (cmisweep.kept_model)
FINAL_FILE = "final.json"  # in the last checkpoint: the final result, reported again after a restore
STATUS = "cmisweep/status"  # a TrialStatus, in the last result of a trial
ERROR = "cmisweep/error"
NODE = "cmisweep/node_id"  # the Ray node that evaluated the trial
GPUS = "cmisweep/gpu_ids"  # the GPU ids Ray gave it ("" without one; "0" for four 0.25 trials on one GPU)
STOPPED_AT = "cmisweep/stopped_at"  # the epoch (ASHA's rung) at which the scheduler stopped the trial
# what a trial's numbers depend on beyond its config, in every result it reports (bf16 rounds
# differently on different CPUs): the CPU's name, its native bf16 paths ("avx512_bf16,amx_tile",
# one, or "none"), the precision the VAE trained in once `auto` was resolved ("bf16" / "fp32"),
# and the device ("cpu", or the GPU's name)
CPU_MODEL = "cmisweep/cpu_model"
CPU_BF16 = "cmisweep/cpu_bf16"
PRECISION = "cmisweep/precision"
DEVICE = "cmisweep/device"
_TMP = tempfile.gettempdir()  # the machine's, before a trial points tempfile at its node's scratch


def node_scratch(node_id: str) -> Path:
    return Path(_TMP) / f"cmisweep-node-{node_id}"


def use_node_scratch() -> Path:
    """Point this worker's temporary files (ours, and the checkpoints Ray downloads to restore a
    trial) at a directory of its node's own. Nodes of a real cluster share no disk; the nodes of a
    local rehearsal (cluster/local.yaml) share this machine's, and a directory per node keeps them
    apart, so a test can take a node's disk away with the node and see that its trials come back
    from shared storage alone (docs/design.md, section 6)."""
    d = node_scratch(ray.get_runtime_context().get_node_id())
    d.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(d)
    return d


class _StopRequested(Exception):
    def __init__(self, epoch: int):
        self.epoch = epoch


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if is_number(v)}


def run_record(trainer) -> dict:
    """The trial's CPU, device and resolved training precision, under the keys above."""
    device = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else trainer.device.type
    return {CPU_MODEL: cpu_model(), CPU_BF16: cpu_bf16_features(), PRECISION: trainer.precision, DEVICE: device}


def final_result(trainer, metrics: dict) -> dict:
    """The final result of an evaluated trial: the last epoch's numbers, the evaluation's as
    final/<name>, and the run record; the caller adds the status and where it ran."""
    last = trainer.history[-1] if trainer.history else {"epoch": 0}
    return {**_numbers(last), **{f"final/{k}": v for k, v in _numbers(metrics).items()}, **run_record(trainer)}


def make_trainable(space: SearchSpace):
    """A function trainable bound to a space (passed as a plain dict: Ray pickles it)."""
    space_dict = space.model_dump()

    def cmisweep_trial(config: dict) -> None:
        space = SearchSpace.model_validate(space_dict)
        cfg = resolve(space, config).config
        if cfg.train.threads is None:
            torch.set_num_threads(max(1, int(space.resources.cpu)))
        use_node_scratch()
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                if (Path(d) / FINAL_FILE).exists():
                    # evaluated already (the driver died before it recorded the end): report again
                    final = json.loads((Path(d) / FINAL_FILE).read_text())
                    tune.report(final, checkpoint=tune.Checkpoint.from_directory(d))
                    return
        trainer, data = build_trainer(cfg)
        if ckpt is not None:
            with ckpt.as_directory() as d:
                trainer.restore(Path(d) / CHECKPOINT_FILE)

        sc = space.scheduler
        # the trial reads the stop board after each epoch when a stop may end in an evaluation
        asks_to_stop = sc is not None and (sc.evaluate_stopped or (sc.kind == "moasha" and sc.collapse_min_epoch))
        record = run_record(trainer)  # in every result: a trial the scheduler ends has no final one
        trial_id = tune.get_context().get_trial_id()
        probe = epoch_probe(space, cfg)

        def report_epoch(metrics: dict, trainer) -> None:
            if probe:  # the per-epoch AoLR (metrics.probes.epoch_aolr; MO-ASHA ranks on it), timed
                from cmisweep.metrics.probes import epoch_aolr

                t0 = time.perf_counter()
                metrics["val/aolr"] = epoch_aolr(trainer.model, data.val_x, data.val_y, probe, cfg.seed)
                metrics["time/probe_s"] = time.perf_counter() - t0
            with tempfile.TemporaryDirectory(prefix="cmisweep-ckpt-") as d:
                trainer.save(Path(d) / CHECKPOINT_FILE)
                tune.report({**_numbers(metrics), **record}, checkpoint=tune.Checkpoint.from_directory(d))
            if asks_to_stop and trainer.epoch < cfg.train.epochs:
                from cmisweep.sweep.early_stop import stop_requested

                rung = stop_requested(space.name, trial_id, trainer.epoch)
                if rung is not None:
                    raise _StopRequested(rung)

        stopped_at = None
        try:
            trainer.fit(cfg.train.epochs, on_epoch=report_epoch)
        except TrainingDiverged as e:
            tune.report({"epoch": e.epoch, STATUS: TrialStatus.FAILED.value, ERROR: str(e), **record})
            return
        except _StopRequested as stop:
            stopped_at = stop.epoch
        report_final(trainer, data, cfg, stopped_at)

    return cmisweep_trial


def report_final(trainer, data, cfg, stopped_at: int | None) -> None:
    """Evaluate the best epoch; report the final result with a last checkpoint that holds the
    artifacts, the kept model (the sweep's models/ gets it: sweep.collect) and the final result."""
    with tempfile.TemporaryDirectory(prefix="cmisweep-final-") as d:
        out = Path(d)
        metrics, _ = finish(trainer, data, cfg, out / "artifacts")
        save_kept(trainer.model, cfg, data, out / KEPT_FILE)
        trainer.save(out / CHECKPOINT_FILE)
        final = final_result(trainer, metrics)
        final[STATUS] = (TrialStatus.FINISHED if stopped_at is None else TrialStatus.STOPPED).value
        final[NODE] = ray.get_runtime_context().get_node_id()  # where it ran: a cluster's placement
        final[GPUS] = ",".join(map(str, ray.get_gpu_ids()))
        if stopped_at is not None:
            final[STOPPED_AT] = stopped_at
        (out / FINAL_FILE).write_text(json.dumps(final))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(d))
